"""The hand-written rules equal the autograd gradients of the energy, for every
activation and both directions, including the supervised readout term."""

import pytest
import torch

from pcn_lightning import equations as eq
from pcn_lightning.activations import ACTIVATIONS
from pcn_lightning.network import PredictiveCodingNetwork

DIMS = [7, 5, 4, 3]
C = 3
B = 6


def autograd_energy(xs, weights, acts, readout=None, y=None):
    """E written directly from its definition, for autograd."""
    E = 0.0
    for l, (W, f) in enumerate(zip(weights, acts)):
        E = E + 0.5 * (xs[l] - f.f(xs[l + 1] @ W.T)).pow(2).sum()
    if readout is not None and y is not None:
        E = E + 0.5 * (y - xs[-1] @ readout.T).pow(2).sum()
    return E


def make_state(direction, activation, seed=0):
    torch.manual_seed(seed)
    net = PredictiveCodingNetwork(DIMS, C, activation, direction).double()
    x = torch.randn(B, DIMS[0], dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, C, (B,)), C).double()
    if direction == "discriminative":
        xs, free = net.initial_state(x, y, mode="random", std=1.0)
    else:
        xs, free = net.initial_state(x, None, mode="random", std=1.0)
    return net, xs, free, y


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_latent_update_is_minus_dE_dx(direction, activation):
    net, xs, free, y = make_state(direction, activation)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    with torch.no_grad():
        errors = eq.prediction_errors(xs, weights, acts, readout, y_sup)
        grads = eq.latent_gradients(xs, weights, errors, free, readout)
    leaves = [x.detach().clone().requires_grad_(f) for x, f in zip(xs, free)]
    E = autograd_energy(leaves, [W.detach() for W in weights], acts,
                        readout.detach() if readout is not None else None, y_sup)
    auto = torch.autograd.grad(E, [x for x, f in zip(leaves, free) if f])
    mine = [g for g in grads if g is not None]
    assert len(mine) == len(auto) == sum(free)
    for g, a in zip(mine, auto):
        assert rel_err(g, a) < 1e-10

    # and inference_step moves each free latent by exactly -eta * dE/dx
    eta = 0.01
    before = [x.clone() for x in xs]
    eq.inference_step(xs, weights, errors, free, eta, readout)
    it = iter(auto)
    for x0, x1, f in zip(before, xs, free):
        if f:
            assert rel_err(x1 - x0, -eta * next(it)) < 1e-10
        else:
            assert torch.equal(x0, x1)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hebbian_gradient_is_dE_dW(direction, activation):
    net, xs, free, y = make_state(direction, activation, seed=1)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    with torch.no_grad():
        errors = eq.prediction_errors(xs, weights, acts, readout, y_sup)
        grads, grad_r = eq.weight_gradients(xs, errors)
    params = net.chain_parameters()
    E = autograd_energy(xs, weights, acts, readout, y_sup)
    auto = torch.autograd.grad(E, params)
    mine = grads + ([grad_r] if grad_r is not None else [])
    assert len(mine) == len(auto) == net.n_layers + 1
    for g, a in zip(mine, auto):
        assert g.shape == a.shape
        assert rel_err(g, a) < 1e-10


def test_energy_matches_definition():
    net, xs, free, y = make_state("generative", "tanh")
    weights, acts, readout = net.chain()
    errors = eq.prediction_errors(xs, weights, acts, readout, y)
    direct = autograd_energy(xs, weights, acts, readout, y)
    assert torch.allclose(eq.energy(errors), direct, rtol=1e-12)
    per = eq.layer_energies(errors)
    assert per.shape == (net.n_layers + 1,)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_energy_non_increasing_over_settle(direction, activation):
    net, xs, free, y = make_state(direction, activation, seed=2)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    with torch.no_grad():
        res = eq.settle(xs, weights, acts, free, T_infer=200, eta_infer=0.01,
                        readout=readout, y=y_sup, record=True)
    total = res.trace.sum(1)
    assert res.trace.shape == (201, net.n_layers + 1)  # the readout term in both directions
    assert res.steps == 200
    assert (total[1:] <= total[:-1] + 1e-12).all()
    assert total[-1] < total[0]
    # the returned errors belong to the final latents (no stale errors for learning)
    fresh = eq.prediction_errors(xs, weights, acts, readout, y_sup)
    assert torch.allclose(eq.energy(fresh), eq.energy(res.errors))


def test_settle_tolerance_stops_early():
    net, xs, free, y = make_state("generative", "tanh", seed=3)
    weights, acts, readout = net.chain()
    with torch.no_grad():
        res = eq.settle([x.clone() for x in xs], weights, acts, free, 2000, 0.05,
                        readout, y, record=True, tol=1e-3)
    assert 0 < res.steps < 2000
    assert eq.relative_drop(res.trace.sum(1)) < 1e-2


def test_relative_drop():
    flat = torch.tensor([10.0] + [1.0] * 20)
    falling = torch.linspace(10, 1, 21)
    assert eq.relative_drop(flat) == 0.0
    assert eq.relative_drop(falling) > 0.1


@pytest.mark.parametrize(
    "dims,classes,count",
    [
        ([3072, 1000, 500, 10], 10, 3_577_100),
        ([3072, 1500, 1000, 750, 500, 350, 100], 100, 7_453_000),
        ([3072, 1000, 500, 100], 100, 3_632_000),
    ],
)
@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_seed_parameter_counts(dims, classes, count, direction):
    net = PredictiveCodingNetwork(dims, classes, "relu", direction)
    assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_buffered_errors_equal_the_formulas(direction, activation):
    net, xs, free, y = make_state(direction, activation, seed=4)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    with torch.no_grad():
        plain = eq.prediction_errors(xs, weights, acts, readout, y_sup)
        buf = eq.error_buffers(xs, acts, y_sup is not None, C)
        for _ in range(2):  # reusing the buffers gives the same numbers
            fused = eq.prediction_errors(xs, weights, acts, readout, y_sup, out=buf)
    for name in ("preacts", "eps", "h"):
        for p, f in zip(getattr(plain, name), getattr(fused, name)):
            assert torch.allclose(p, f, rtol=1e-12, atol=1e-14), name
    if y_sup is not None:
        assert torch.allclose(plain.eps_y, fused.eps_y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
def test_precision_weighted_rules_equal_autograd(direction, activation):
    """With per-layer precisions E = 1/2 sum pi(l) ||eps(l)||^2: every rule still equals autograd."""
    net, xs, free, y = make_state(direction, activation, seed=5)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    pi = [0.3, 2.0, 0.05, 0.7][: len(weights)]
    pi_y = 0.2 if y_sup is not None else 1.0

    def E_auto(xs_, ws_, r_):
        E = 0.0
        for l, (W, f) in enumerate(zip(ws_, acts)):
            E = E + 0.5 * pi[l] * (xs_[l] - f.f(xs_[l + 1] @ W.T)).pow(2).sum()
        if y_sup is not None:
            E = E + 0.5 * pi_y * (y_sup - xs_[-1] @ r_.T).pow(2).sum()
        return E

    with torch.no_grad():
        errors = eq.prediction_errors(xs, weights, acts, readout, y_sup, precisions=pi, precision_y=pi_y)
        buf = eq.error_buffers(xs, acts, y_sup is not None, C, pi)
        fused = eq.prediction_errors(xs, weights, acts, readout, y_sup, out=buf, precisions=pi, precision_y=pi_y)
        gx = eq.latent_gradients(xs, weights, errors, free, readout)
        gw, gr = eq.weight_gradients(xs, errors)
    leaves = [x.detach().clone().requires_grad_(f) for x, f in zip(xs, free)]
    E = E_auto(leaves, [W.detach() for W in weights], readout.detach() if readout is not None else None)
    assert torch.allclose(eq.energy(errors), E.detach(), rtol=1e-12)
    assert torch.allclose(eq.energy(fused), E.detach(), rtol=1e-12)
    auto_x = torch.autograd.grad(E, [x for x, f in zip(leaves, free) if f])
    for g, a in zip([g for g in gx if g is not None], auto_x):
        assert rel_err(g, a) < 1e-10
    auto_w = torch.autograd.grad(E_auto(xs, weights, readout), net.chain_parameters())
    for g, a in zip(gw + ([gr] if gr is not None else []), auto_w):
        assert rel_err(g, a) < 1e-10
    # the in-place step moves the latents by exactly -eta dE/dx
    before = [x.clone() for x in xs]
    eq.inference_step(xs, weights, fused, free, 0.01, readout)
    it = iter(auto_x)
    for x0, x1, f in zip(before, xs, free):
        if f:
            assert rel_err(x1 - x0, -0.01 * next(it)) < 1e-10


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_compiled_settle_equals_eager(direction):
    """compile_settle runs `settle_step` through torch.compile: the same latents,
    errors and energy trace as the in-place eager loop (float64, so only the
    compiler's reassociation separates them)."""
    net, xs, free, y = make_state(direction, "tanh", seed=4)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    pis = dict(precisions=[0.5, 1.0, 2.0, 1.5][: len(weights)], precision_y=0.7)
    with torch.no_grad():
        a = [x.clone() for x in xs]
        b = [x.clone() for x in xs]
        ra = eq.settle(a, weights, acts, free, 30, 0.05, readout, y_sup, record=True, **pis)
        rb = eq.settle(b, weights, acts, free, 30, 0.05, readout, y_sup, record=True, compiled=True, **pis)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ra.trace, rb.trace, rtol=1e-9)
    assert ra.trace[-1].sum() < ra.trace[0].sum()
    for p, q in zip(ra.errors.h, rb.errors.h):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_settle_equals_the_plain_rule(direction):
    """The buffered loop (in-place updates, the clamped layer's prediction computed
    once) against x <- x - eta dE/dx written out with fresh tensors every step."""
    net, xs, free, y = make_state(direction, "tanh", seed=5)
    weights, acts, readout = net.chain()
    y_sup = y if direction == "generative" else None
    plain = [x.clone() for x in xs]
    with torch.no_grad():
        res = eq.settle(xs, weights, acts, free, 25, 0.05, readout, y_sup)
        for _ in range(25):
            errors = eq.prediction_errors(plain, weights, acts, readout, y_sup)
            grads = eq.latent_gradients(plain, weights, errors, free, readout)
            plain = [x if g is None else x - 0.05 * g for x, g in zip(plain, grads)]
        final = eq.prediction_errors(plain, weights, acts, readout, y_sup)
    for p, q in zip(xs, plain):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-12)
    assert torch.allclose(eq.energy(res.errors), eq.energy(final), rtol=1e-12)
