"""Every registered primitive's hand-written rules equal autograd (float64).

A primitive is tested by being registered: its `example()` instance is checked
here, for the rules themselves and inside an energy term with every activation.
"""

import pytest
import torch

from pcn_lightning.activations import ACTIVATIONS
from pcn_lightning.primitives import REGISTRY
from pcn_lightning.terms import Term

B = 4


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def example(name):
    torch.manual_seed(0)
    m = REGISTRY[name].example().double()
    x = torch.randn(B, *m.in_shape, dtype=torch.float64)
    return m, x


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_transpose_and_weight_grads_are_the_vector_jacobian_products(name):
    """For any h: transpose(h) = d<h, a>/dx and weight_grads(h) = -d<h, a>/dtheta."""
    m, x = example(name)
    a, ctx = m.predict(x)
    assert tuple(a.shape[1:]) == m.out_shape
    h = torch.randn_like(a)
    xr = x.clone().requires_grad_(True)
    params = list(m.parameters())
    inner = (h * m.predict(xr)[0]).sum()
    auto = torch.autograd.grad(inner, [xr] + params)
    assert rel_err(m.transpose(h, ctx), auto[0]) < 1e-12
    grads = m.weight_grads(h, ctx)
    assert len(grads) == len(params)
    for g, p, ag in zip(grads, params, auto[1:]):
        assert g.shape == p.shape
        assert rel_err(g, -ag) < 1e-12


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_term_rules_are_the_energy_gradients(name, activation):
    """In a term pi/2 ||x_t - f(map(x_s))||^2: dE/dx_t, dE/dx_s and dE/dtheta by hand == autograd."""
    m, x = example(name)
    term = Term("t", 0, 1, m, ACTIVATIONS[activation], precision=0.7)
    target = torch.randn(B, *m.out_shape, dtype=torch.float64)
    err = term.errors(target, x)
    grad_target = term.pi * err.eps
    grad_source = -m.transpose(err.h, err.ctx)
    grad_params = term.weight_grads(err)
    t_, s_ = target.clone().requires_grad_(True), x.clone().requires_grad_(True)
    E = term.direct_energy(t_, s_)
    assert torch.allclose(term.energy(err), E.detach(), rtol=1e-12)
    auto = torch.autograd.grad(E, [t_, s_] + list(m.parameters()))
    assert rel_err(grad_target, auto[0]) < 1e-10
    assert rel_err(grad_source, auto[1]) < 1e-10
    for g, ag in zip(grad_params, auto[2:]):
        assert rel_err(g, ag) < 1e-10


@pytest.mark.parametrize("name", sorted(REGISTRY))
@torch.no_grad()
def test_fast_paths_equal_the_rules(name):
    """predict_into and transpose_add_ (the settle loop's in-place forms) give the same numbers."""
    m, x = example(name)
    a, ctx = m.predict(x)
    out = torch.full_like(a, float("nan"))
    ctx2 = m.predict_into(x, out)
    assert torch.allclose(out, a, rtol=1e-12, atol=1e-14)
    h = torch.randn_like(a)
    dst = torch.randn_like(x)
    expected = dst + 0.3 * m.transpose(h, ctx)
    m.transpose_add_(dst, h, ctx2, 0.3)
    assert torch.allclose(dst, expected, rtol=1e-12, atol=1e-14)
