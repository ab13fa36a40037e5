"""The learning timings and the latent optimizer: nudging (positive, negative, centred)
and heavy-ball latents, each update equal to its stated rule, proven against autograd
of the energy in float64."""

import pytest
import torch
import torch.nn.functional as F

from pcn_lightning import NetworkSpec, PCNModule, build_network, settle
from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import Inference, Learning
from pcn_lightning.timing import Nudged, timing_for
from tests.helpers import rel_err

B, C = 8, 4


def module(beta=None, nudging="positive", label_energy="gaussian", schedule="parallel", T=6, eta=0.2, momentum=0.0,
           label_precision=1.0):
    torch.manual_seed(0)
    network = NetworkSpec(direction="discriminative", dims=[10, 8, 6], activations="tanh",
                          precisions=[1.0, 1.0, label_precision], label_energy=label_energy)
    return PCNModule(network, Inference(T_infer=T, eta_infer=eta, schedule=schedule, latent_init="feedforward",
                                        momentum=momentum),
                     learning=Learning(beta=beta, nudging=nudging), input_shape=[10], output_dim=C).double()


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 10, generator=g, dtype=torch.float64), torch.randint(0, C, (B,), generator=g)


def autograd_weight_grads(m, xs):
    """dE/dtheta of the energy written from its definition, at the state xs."""
    params = [p for _, p in m.named_weights()]
    E = m.net.direct_energy([x.detach() for x in xs])
    return params, torch.autograd.grad(E, params)


def nudged_update(m, x, y, b):
    """(the module's hand-set gradients, autograd's dE/dtheta / b at its settled state, and that state)."""
    xs, result = m.settle_batch(x, y, generator=torch.Generator().manual_seed(0), nudge=b)
    settled = dict(m.net.weight_gradients(result.errors))
    params, auto = autograd_weight_grads(m, xs)
    return [settled[p] / b for p in params], [g / b for g in auto], xs


@pytest.mark.parametrize("label_energy", ["gaussian", "categorical"])
@pytest.mark.parametrize("nudging,sign", [("positive", 1.0), ("negative", -1.0)])
def test_nudged_update_is_dE_dtheta_over_beta_at_the_nudged_settled_state(label_energy, nudging, sign):
    """The label node sits at u + b (y - u), u the feedforward prediction of the label;
    the weights learn dE/dtheta / b where the settle ends (E with that clamp)."""
    beta = 0.2
    m = module(beta, nudging, label_energy)
    x, y = batch()
    m.timing.sign = lambda *a: sign * beta  # the step's sign, as drawn
    pairs = m.local_gradients(x, y)
    xs, _ = m.settle_batch(x, y, generator=torch.Generator().manual_seed(0), nudge=sign * beta)
    u = m.net.label_prediction(m.net.initial_state(m.net.batch_input(x), None, "feedforward").xs)
    target = u + sign * beta * (F.one_hot(y, C).double() - u)
    assert torch.allclose(xs[m.net.label], target)
    params, auto = autograd_weight_grads(m, xs)
    for (p, g), a in zip(pairs, auto):
        assert rel_err(g, a / (sign * beta)) < 1e-10, p.shape


def test_weak_label_precision_approaches_backprop_and_a_small_nudge_a_limit_of_its_own():
    """The label's precision p (the energy E + p C, equilibrium propagation's nudge)
    small: the settled update / p tends to backprop's gradient (Whittington & Bogacz
    2017). The label's target nudged (u + b (y - u), precision 1, PCX's) small: the
    update / b tends to a limit that is not backprop's, since the latents move the
    label's prediction as much as the nudge moved its target; beta 1 is the label
    itself, clamped."""
    from pcn_lightning.builders import twin_forward

    x, y = batch()
    weak = module(label_precision=1e-4, T=300, eta=0.2)
    params = [p for _, p in weak.named_weights()]
    scores = twin_forward(weak.net, x)
    bp = torch.autograd.grad(0.5 * (F.one_hot(y, C).double() - scores).pow(2).sum(), params)
    got = [g / 1e-4 for _, g in weak.local_gradients(x, y)]
    assert all(rel_err(g, b) < 1e-3 for g, b in zip(got, bp))
    small, smaller = (nudged_update(module(b, T=300, eta=0.2), x, y, b)[0] for b in (1e-3, 1e-4))
    assert all(rel_err(g, h) < 1e-2 for g, h in zip(small, smaller))  # a limit as b -> 0 ...
    assert all(rel_err(g, b) > 0.1 for g, b in zip(smaller, bp))  # ... not backprop's gradient
    m1 = module(1.0)
    xs, _ = m1.settle_batch(x, y, nudge=1.0)
    assert torch.equal(xs[m1.net.label], F.one_hot(y, C).double())


def test_centred_nudging_averages_to_the_symmetric_difference():
    """Over its sign, the centred update (1/b) g(b), b = +-beta, is the symmetric
    difference (g(beta) - g(-beta)) / (2 beta) of the settled gradients; the sign is
    drawn per batch (or per epoch) from the seed alone, the same on every rank."""
    beta = 0.3
    m = module(beta, "centred")
    x, y = batch()
    plus, _, _ = nudged_update(m, x, y, beta)
    minus, _, _ = nudged_update(m, x, y, -beta)
    g_plus = [g * beta for g in plus]  # g(beta)
    g_minus = [g * -beta for g in minus]  # g(-beta)
    for p, q, gp, gm in zip(plus, minus, g_plus, g_minus):
        assert rel_err(0.5 * (p + q), (gp - gm) / (2 * beta)) < 1e-12
    signs = {m.timing.sign(0, step, 0) for step in range(32)}
    assert signs == {beta, -beta}
    epoch = Nudged(beta, "centred_epoch")
    assert len({epoch.sign(0, step, 3) for step in range(32)}) == 1
    # the training step draws its sign and scales by it: its update is one of the two
    for step in range(4):
        m.trainer_step = step
        b = m.timing.sign(m.seed, step, 0)
        expected = plus if b > 0 else minus
        m.timing.sign = (lambda bb: (lambda *a: bb))(b)
        got = [g for _, g in m.local_gradients(x, y)]
        assert all(rel_err(g, e) < 1e-10 for g, e in zip(got, expected))
        m.timing = timing_for(m.learning)


def reference_momentum_settle(net, xs, free, eta, mu, T, schedule):
    """Heavy-ball descent on E written from its definition (autograd dE/dx, float64)."""
    xs = [x.clone() if x is not None else None for x in xs]
    v = {j: torch.zeros_like(xs[j]) for j in range(len(xs)) if free[j]}

    def grad(j):
        leaves = [x.detach().clone().requires_grad_(k == j) for k, x in enumerate(xs)]
        return torch.autograd.grad(net.direct_energy(leaves), leaves[j])[0]

    for _ in range(T):
        if schedule == "parallel":
            gs = {j: grad(j) for j in v}
            for j in v:
                v[j] = mu * v[j] + gs[j]
                xs[j] = xs[j] - eta * v[j]
        else:
            for j in net.sweep_from_label:
                if j in v:
                    v[j] = mu * v[j] + grad(j)
                    xs[j] = xs[j] - eta * v[j]
    return xs


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_momentum_settle_is_heavy_ball_descent_on_the_energy(schedule):
    torch.manual_seed(0)
    net = build_network(NetworkSpec(direction="discriminative", dims=[7, 6, 5, 3], activations="tanh"), [7], 3).double()
    x = torch.randn(B, 7, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, 3, (B,)), 3).double()
    xs, free, _ = net.initial_state(x, y, "random", std=1.0)
    ref = reference_momentum_settle(net, xs, free, 0.1, 0.5, 7, schedule)
    with torch.no_grad():
        settle(net, xs, free, Inference(T_infer=7, eta_infer=0.1, momentum=0.5, schedule=schedule))
    for j, f in enumerate(free):
        if f:
            assert rel_err(xs[j], ref[j]) < 1e-12


def test_momentum_zero_is_the_plain_settle():
    torch.manual_seed(0)
    net = build_network(NetworkSpec(direction="discriminative", dims=[7, 6, 3]), [7], 3).double()
    x = torch.randn(B, 7, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, 3, (B,)), 3).double()
    a, free, _ = net.initial_state(x, y, "random", std=1.0)
    b = [t.clone() for t in a]
    with torch.no_grad():
        settle(net, a, free, Inference(T_infer=5, eta_infer=0.1))
    reference = reference_momentum_settle(net, b, free, 0.1, 0.0, 5, "parallel")
    assert all(rel_err(a[j], reference[j]) < 1e-12 for j, f in enumerate(free) if f)


@pytest.mark.parametrize("make,message", [
    (lambda: Inference(momentum=1.0), r"inference.momentum must be a number in \[0, 1\)"),
    (lambda: Inference(momentum=-0.1), r"inference.momentum must be a number in \[0, 1\)"),
    (lambda: Learning(beta=0.0), r"learning.beta must be a number in \(0, 1\]"),
    (lambda: Learning(beta=1.5), r"learning.beta must be a number in \(0, 1\]"),
    (lambda: Learning(nudging="centred"), r"nudging 'centred' needs learning.beta"),
    (lambda: Learning(beta=0.1, nudging="sideways"), r"unknown nudging 'sideways'"),
    (lambda: timing_for(Learning(beta=0.1, weight_errors="on_arrival")), r"use weight_errors 'settled' with it"),
    (lambda: module(beta=0.1).__class__(NetworkSpec(direction="generative", dims=[10, 8, 6]),
                                         Inference(latent_init="random"), learning=Learning(beta=0.1), output_dim=4),
     r"nudges the label from the network's feedforward prediction"),
])
def test_bad_nudging_and_momentum_settings_get_one_clear_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
