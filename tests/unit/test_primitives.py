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
    """predict_into, transpose_add_ (the settle loop's in-place forms) and
    transpose_and_weight_grads (learning on arrival) give the rules' numbers."""
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
    back, grads = m.transpose_and_weight_grads(h, ctx)
    assert torch.allclose(back, m.transpose(h, ctx), rtol=1e-12, atol=1e-14)
    expected_grads = m.weight_grads(h, ctx)
    assert len(grads) == len(expected_grads) == len(list(m.parameters()))
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,kwargs,in_shape", [
    ("conv", dict(channels=4, kernel=3, stride=1, padding=1), (3, 9, 7)),
    ("conv", dict(channels=2, kernel=3, stride=2, padding=0), (1, 9, 8)),
    ("conv", dict(channels=2, kernel=5, stride=2, padding=2), (2, 11, 10)),
    ("conv", dict(channels=3, kernel=1, stride=3, padding=0), (2, 7, 7)),
    ("maxpool", dict(kernel=2), (3, 7, 9)),
    ("maxpool", dict(kernel=3, stride=2, padding=1), (2, 8, 5)),
    ("avgpool", dict(kernel=2), (3, 9, 6)),
    ("avgpool", dict(kernel=3, stride=1, padding=1), (2, 5, 5)),
])
def test_conv_and_pool_shapes_odd_sizes_stride_padding(name, kwargs, in_shape):
    """out_shape is torch's own output shape; transpose comes back to the input's
    shape exactly (odd sizes and strides leave rows the forward skipped)."""
    import torch.nn.functional as F
    from pcn_lightning.primitives import build_map

    torch.manual_seed(0)
    m = build_map(name, in_shape, kwargs).double()
    x = torch.randn(2, *in_shape, dtype=torch.float64)
    a, ctx = m.predict(x)
    if name == "conv":
        ref = F.conv2d(x, m.weight, m.bias, m.stride, m.padding)
    elif name == "maxpool":
        ref = F.max_pool2d(x, m.kernel, m.stride, m.padding)
    else:
        ref = F.avg_pool2d(x, m.kernel, m.stride, m.padding)
    assert torch.equal(a, ref) and tuple(a.shape[1:]) == m.out_shape
    assert m.transpose(torch.randn_like(a), ctx).shape == x.shape
    xr = x.clone().requires_grad_(True)
    h = torch.randn_like(a)
    (auto,) = torch.autograd.grad((h * m.predict(xr)[0]).sum(), [xr])
    assert rel_err(m.transpose(h, ctx), auto) < 1e-12


def test_composite_block_rules_equal_autograd():
    """A VGG block (conv -> GELU -> max-pool, the latent after the pool) and a residual
    conv block, as Sequential/Residual of registered primitives."""
    from pcn_lightning.primitives import Act, Conv2d, MaxPool2d, Residual, Sequential

    torch.manual_seed(0)
    shape = (2, 8, 7)
    conv = Conv2d(shape, channels=3, kernel=3, padding=1)
    act = Act(conv.out_shape, "gelu")
    blocks = [Sequential(shape, [conv, act, MaxPool2d(act.out_shape, 2)]),
              Residual(shape, Conv2d(shape, channels=2, kernel=3, padding=1))]
    for m in blocks:
        m = m.double()
        x = torch.randn(B, *shape, dtype=torch.float64)
        term = Term("t", 0, 1, m, ACTIVATIONS["tanh"], precision=0.5)
        target = torch.randn(B, *m.out_shape, dtype=torch.float64)
        err = term.errors(target, x)
        s_ = x.clone().requires_grad_(True)
        E = term.direct_energy(target, s_)
        auto = torch.autograd.grad(E, [s_] + list(m.parameters()))
        assert rel_err(-m.transpose(err.h, err.ctx), auto[0]) < 1e-10
        for g, ag in zip(term.weight_grads(err), auto[1:]):
            assert rel_err(g, ag) < 1e-10


def test_lipschitz_bound_is_cached_until_a_parameter_changes():
    """Curvature-normalized steps read every map's bound once per settle; between
    optimizer steps the bound is reused, and any in-place update recomputes it."""
    from pcn_lightning.primitives.dense import Dense

    torch.manual_seed(0)
    m = Dense((6,), units=4)
    calls = []
    plain = m.lipschitz
    m.lipschitz = lambda: calls.append(1) or plain()
    first = m.lipschitz_bound()
    assert m.lipschitz_bound() == first and len(calls) == 1
    with torch.no_grad():
        m.weight.mul_(2.0)  # what an optimizer step does: in place
    assert abs(m.lipschitz_bound() / first - 2.0) < 1e-4 and len(calls) == 2
    m.load_state_dict({"weight": torch.zeros(4, 6)})
    assert m.lipschitz_bound() < 1e-6 and len(calls) == 3


def test_lipschitz_bound_follows_the_optimizer_step():
    """Fused Adam (the default on CPU and CUDA) updates the weights in place without
    bumping their version counters: the optimizer's step hook drops the cached bounds,
    so normalized steps use the bound of the current weights (they used the first
    step's for the whole run before)."""
    from pcn_lightning.language import TemporalPCNModule

    torch.manual_seed(0)
    m = TemporalPCNModule(hidden=8, window=2, output_dim=5)
    opt = m.configure_optimizers()
    assert opt.defaults.get("fused")
    maps = [t.map for t in m.net.terms]
    before = [mp.lipschitz_bound() for mp in maps]
    for p in m.net.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(3):
        opt.step()
    after = [mp.lipschitz_bound() for mp in maps]
    assert after == [mp.lipschitz() for mp in maps] and all(a != b for a, b in zip(after, before))


@pytest.mark.parametrize("name", ["attention", "transformer_block"])
def test_attention_is_causal(name):
    """A change at a later position leaves every earlier position's prediction as it was."""
    m, x = example(name)
    a = m.predict(x)[0]
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])
    b = m.predict(x2)[0]
    assert torch.equal(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3:], b[:, 3:])


def test_categorical_term_over_a_sequence_is_its_energy_gradient():
    """A categorical term whose target is one distribution per position (B, T, V): the
    softmax runs over the last axis, and the hand-written rules equal autograd."""
    torch.manual_seed(0)
    m = REGISTRY["token_dense"]((4, 5), units=6).double()
    term = Term("readout", 0, 1, m, ACTIVATIONS["linear"], precision=0.7, energy="categorical")
    x = torch.randn(B, 4, 5, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 6, (B, 4)), 6).double()
    err = term.errors(y, x)
    s_ = x.clone().requires_grad_(True)
    E = term.direct_energy(y, s_)
    assert torch.allclose(term.energy(err), E.detach(), rtol=1e-12)
    auto = torch.autograd.grad(E, [s_] + list(m.parameters()))
    assert rel_err(-m.transpose(err.h, err.ctx), auto[0]) < 1e-10
    for g, a in zip(term.weight_grads(err), auto[1:]):
        assert rel_err(g, a) < 1e-10


def test_sequence_maps_take_a_shorter_sequence_as_its_first_positions():
    """A prompt shorter than the configured positions (sampling): each position's
    prediction is the one it has inside the full sequence (causal, learned positions)."""
    torch.manual_seed(0)
    from pcn_lightning.primitives import Position, Sequential

    block = REGISTRY["transformer_block"]((6, 4), heads=2, mlp_ratio=2).double()
    m = Sequential((6, 4), [Position((6, 4), std=0.5).double(), block])
    x = torch.randn(B, 6, 4, dtype=torch.float64)
    assert torch.allclose(m.predict(x[:, :4])[0], m.predict(x)[0][:, :4], atol=1e-12)
