"""The hand-written rules equal the autograd gradients of the energy, for every
activation and both directions, the label's term included; the fast settle paths
equal the reference step."""

import pytest
import torch

from pcn_lightning import NetworkSpec, build_network, settle
from pcn_lightning.activations import ACTIVATIONS
from pcn_lightning.inference import ErrorBuffers, reference_step, relative_drop, step_in_place
from pcn_lightning.settings import Inference, Learning

DIMS = [7, 5, 4, 3]
C = 3
B = 6


def make_state(direction, activation, seed=0, precisions=None):
    """A network and a state with every latent random; the label clamped."""
    torch.manual_seed(seed)
    net = build_network(NetworkSpec(direction=direction, dims=DIMS, activations=activation, precisions=precisions),
                        [DIMS[0]], C).double()
    x = torch.randn(B, DIMS[0], dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, C, (B,)), C).double()
    xs, free, _ = net.initial_state(x, y, "random", std=1.0)
    return net, xs, free


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def autograd_latent_grads(net, xs, free):
    leaves = [x.detach().clone().requires_grad_(f) for x, f in zip(xs, free)]
    E = net.direct_energy(leaves)
    return torch.autograd.grad(E, [x for x, f in zip(leaves, free) if f])


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_latent_update_is_minus_dE_dx(direction, activation):
    net, xs, free = make_state(direction, activation)
    with torch.no_grad():
        errors = net.errors(xs)
        grads = net.latent_gradients(errors, free)
    auto = autograd_latent_grads(net, xs, free)
    mine = [g for g in grads if g is not None]
    assert len(mine) == len(auto) == sum(free) == len(DIMS) - 1
    for g, a in zip(mine, auto):
        assert rel_err(g, a) < 1e-10
    # the reference step and the in-place step both move each free latent by exactly -eta dE/dx
    eta = 0.01
    new, _ = reference_step(net, xs, free, eta, [True] * len(net.terms))
    before = [x.clone() for x in xs]
    with torch.no_grad():
        buf = ErrorBuffers(net, xs, free, [True] * len(net.terms))
        step_in_place(net, xs, free, eta, buf.update(xs, first=True))
    it = iter(auto)
    for x0, x1, x2, f in zip(before, xs, new, free):
        if f:
            a = next(it)
            assert rel_err(x1 - x0, -eta * a) < 1e-10
            assert rel_err(x2 - x0, -eta * a) < 1e-10
        else:
            assert torch.equal(x0, x1)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hebbian_gradient_is_dE_dW(direction, activation):
    net, xs, free = make_state(direction, activation, seed=1)
    with torch.no_grad():
        pairs = net.weight_gradients(net.errors(xs))
    params = [p for p, _ in pairs]
    assert len(params) == len(net.terms) == len(DIMS)  # W(0..L-1) and the readout
    auto = torch.autograd.grad(net.direct_energy(xs), params)
    for (p, g), a in zip(pairs, auto):
        assert g.shape == p.shape == a.shape
        assert rel_err(g, a) < 1e-10


def test_energy_matches_definition():
    net, xs, free = make_state("generative", "tanh")
    errors = net.errors(xs)
    assert torch.allclose(net.energies(errors).sum(), net.direct_energy(xs), rtol=1e-12)
    assert net.energies(errors).shape == (len(DIMS),)
    assert torch.allclose(net.sample_energies(errors).sum(), net.direct_energy(xs), rtol=1e-12)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_energy_non_increasing_over_settle(direction, activation):
    net, xs, free = make_state(direction, activation, seed=2)
    with torch.no_grad():
        res = settle(net, xs, free, Inference(T_infer=200, eta_infer=0.01), record=True)
    total = res.trace.sum(1)
    assert res.trace.shape == (201, len(DIMS))  # the label's term in both directions
    assert res.steps == 200
    assert (total[1:] <= total[:-1] + 1e-12).all()
    assert total[-1] < total[0]
    # the returned errors belong to the final latents (no stale errors for learning)
    assert torch.allclose(net.energies(net.errors(xs)).sum(), net.energies(res.errors).sum())


def test_settle_tolerance_stops_early():
    net, xs, free = make_state("generative", "tanh", seed=3)
    with torch.no_grad():
        res = settle(net, xs, free, Inference(T_infer=2000, eta_infer=0.05, settle_tol=1e-3), record=True)
    assert 0 < res.steps < 2000
    assert relative_drop(res.trace.sum(1)) < 1e-2


def test_relative_drop():
    flat = torch.tensor([10.0] + [1.0] * 20)
    falling = torch.linspace(10, 1, 21)
    assert relative_drop(flat) == 0.0
    assert relative_drop(falling) > 0.1
    assert relative_drop(torch.linspace(1, 10, 21)) < 0  # a rising energy


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
    net = build_network(NetworkSpec(direction=direction, dims=dims), [dims[0]], classes)
    assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_buffered_errors_equal_the_formulas(direction, activation):
    net, xs, free = make_state(direction, activation, seed=4, precisions=[0.3, 1.0, 2.0, 0.5])
    active = [True] * len(net.terms)
    with torch.no_grad():
        plain = net.errors(xs)
        buf = ErrorBuffers(net, xs, free, active)
        buf.update(xs, first=True)
        fused = buf.update(xs)  # reusing the buffers gives the same numbers
    for p, f in zip(plain, fused):
        for name in ("a", "eps", "h"):
            assert torch.allclose(getattr(p, name), getattr(f, name), rtol=1e-12, atol=1e-14), name


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
def test_precision_weighted_rules_equal_autograd(direction, activation):
    """With per-term precisions E = 1/2 sum pi(k) ||eps(k)||^2: every rule still equals autograd."""
    net, xs, free = make_state(direction, activation, seed=5, precisions=[0.3, 2.0, 0.05, 0.2])
    with torch.no_grad():
        errors = net.errors(xs)
        gx = net.latent_gradients(errors, free)
        gw = net.weight_gradients(errors)
    E = net.direct_energy(xs)
    assert torch.allclose(net.energies(errors).sum(), E.detach(), rtol=1e-12)
    for g, a in zip([g for g in gx if g is not None], autograd_latent_grads(net, xs, free)):
        assert rel_err(g, a) < 1e-10
    for (p, g), a in zip(gw, torch.autograd.grad(E, [p for p, _ in gw])):
        assert rel_err(g, a) < 1e-10


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_compiled_settle_equals_eager(direction):
    """compile_settle runs the reference step through torch.compile: the same latents,
    errors and energy trace as the in-place eager loop (float64, so only the
    compiler's reassociation separates them)."""
    net, xs, free = make_state(direction, "tanh", seed=4, precisions=[0.5, 1.0, 2.0, 0.7])
    with torch.no_grad():
        a = [x.clone() for x in xs]
        b = [x.clone() for x in xs]
        ra = settle(net, a, free, Inference(T_infer=30, eta_infer=0.05), record=True)
        rb = settle(net, b, free, Inference(T_infer=30, eta_infer=0.05, compile_settle=True), record=True)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ra.trace, rb.trace, rtol=1e-9)
    assert ra.trace[-1].sum() < ra.trace[0].sum()
    for p, q in zip(ra.errors, rb.errors):
        assert torch.allclose(p.h, q.h, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_settle_equals_the_reference_step(direction):
    """The buffered loop (in-place updates, the clamped node's prediction made once)
    against the reference step x <- x - eta dE/dx with fresh tensors every step."""
    net, xs, free = make_state(direction, "tanh", seed=5)
    plain = [x.clone() for x in xs]
    active = [True] * len(net.terms)
    with torch.no_grad():
        res = settle(net, xs, free, Inference(T_infer=25, eta_infer=0.05))
        for _ in range(25):
            plain, _ = reference_step(net, plain, free, 0.05, active)
        final = net.errors(plain)
    for p, q in zip(xs, plain):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-12)
    assert torch.allclose(net.energies(res.errors).sum(), net.energies(final).sum(), rtol=1e-12)


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_label_free_settle_drops_leaves_and_fills_them_in(direction):
    """With the label free, its term (and in the discriminative chain every term, in
    turn) is dropped from settling and its node set to its prediction: the exact
    minimum over those nodes. The discriminative network's label-free state is the
    feedforward sweep, reached in zero steps."""
    net, xs, free = make_state(direction, "tanh", seed=6)
    x = xs[net.data]
    state, free, _ = net.initial_state(x, None, "random", std=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        res = settle(net, state, free, Inference(T_infer=40, eta_infer=0.05))
    label_term = next(k for k, t in enumerate(net.terms) if t.target == net.label)
    assert not res.active[label_term]
    t = net.terms[label_term]
    assert torch.equal(state[net.label], t.act.f(t.map.predict(state[t.source])[0]))
    if direction == "discriminative":
        assert not any(res.active) and res.steps == 0
        assert all(e.abs().max() < 1e-12 for e in [e.eps for e in net.errors(state)])
    else:
        assert all(res.active[k] for k in range(len(net.terms)) if k != label_term) and res.steps == 40


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
def test_sequential_sweep_equals_its_reference_and_descends(direction):
    """The in-place sweep (only the touched terms' errors refreshed after each node
    moves) against the reference sweep written with fresh tensors; the energy falls."""
    from pcn_lightning.inference import reference_sweep

    net, xs, free = make_state(direction, "tanh", seed=7)
    plain = [x.clone() for x in xs]
    active = [True] * len(net.terms)
    with torch.no_grad():
        res = settle(net, xs, free, Inference(T_infer=10, eta_infer=0.05, schedule="sequential"), record=True)
        for _ in range(10):
            plain = reference_sweep(net, plain, free, 0.05, active)
    for p, q in zip(xs, plain):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-12)
    assert torch.allclose(net.energies(res.errors).sum(), net.energies(net.errors(plain)).sum(), rtol=1e-12)
    total = res.trace.sum(1)
    assert (total[1:] <= total[:-1] + 1e-12).all() and total[-1] < total[0]


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
@pytest.mark.parametrize("pre_activation", [False, True])
def test_settle_from_the_feedforward_predictions_equals_the_reference(schedule, pre_activation):
    """The path training takes: latents started at the feedforward sweep, whose
    predictions settle reuses. With identity activations (muPC's residual blocks, the
    VGG-5's pooled blocks) the sweep makes each latent its prediction tensor itself;
    the settle must still move every latent exactly as the reference steps do."""
    from pcn_lightning.inference import reference_sweep

    torch.manual_seed(3)
    hidden = {"dense": {"units": 6, **({"pre_activation": "tanh"} if pre_activation else {})}, "repeat": 2}
    spec = NetworkSpec(direction="discriminative", layers=[{"dense": {"units": 6}}, hidden, {"dense": {}}])
    net = build_network(spec, [5], 3).double()
    x, label = torch.randn(4, 5, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[[0, 2, 1, 0]]
    with torch.no_grad():
        xs, free, predictions = net.initial_state(x, label, "feedforward")
        plain = [t.clone() for t in xs]
        res = settle(net, xs, free, Inference(T_infer=6, eta_infer=0.2, schedule=schedule), predictions=predictions)
        active = [True] * len(net.terms)
        for _ in range(6):
            plain = (reference_sweep(net, plain, free, 0.2, active) if schedule == "sequential"
                     else reference_step(net, plain, free, 0.2, active)[0])
    latents = [j for j, f in enumerate(free) if f]
    assert all((plain[j] - net.initial_state(x, label, "feedforward")[0][j]).abs().max() > 1e-6 for j in latents)
    for p, q in zip(xs, plain):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-12)
    assert torch.allclose(net.energies(res.errors).sum(), net.energies(net.errors(plain)).sum(), rtol=1e-12)


def test_sequential_settling_gives_every_layer_the_backprop_direction():
    """Deep chain, latents from the feedforward sweep, a small label precision: L
    sequential steps at eta 1 (L: the number of hidden layers) hand every layer's
    Hebbian rule the backprop gradient (of 1/2 ||y - scores||^2) up to its scale,
    the equilibrium result of Whittington & Bogacz; as many parallel steps do not
    (the bottom layers' errors are still off), which is why deep nets need it."""
    from torch.nn.functional import cosine_similarity as cos

    from pcn_lightning.builders import twin_forward

    torch.manual_seed(0)
    dims = [10, 9, 8, 8, 7, 6]
    spec = NetworkSpec(direction="discriminative", dims=dims, activations="tanh", precisions=[1.0] * 5 + [1e-4])
    net = build_network(spec, [10], 4).double()
    x = torch.randn(16, 10, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (16,)), 4).double()
    loss = 0.5 * (y - twin_forward(net, x)).pow(2).sum()
    bp = torch.autograd.grad(loss, [t.map.weight for t in net.terms])
    cosines = {}
    for schedule, eta in (("sequential", 1.0), ("parallel", 0.5)):
        xs, free, _ = net.initial_state(x, y, "feedforward")
        with torch.no_grad():
            res = settle(net, xs, free, Inference(T_infer=len(dims) - 1, eta_infer=eta, schedule=schedule))
        pc = [g for _, g in net.weight_gradients(res.errors)]
        cosines[schedule] = [cos(g.flatten(), b.flatten(), dim=0).item() for g, b in zip(pc, bp)]
    assert min(cosines["sequential"]) > 0.999, cosines
    assert min(cosines["parallel"][:2]) < 0.9, cosines  # the layers nearest the input


@pytest.mark.parametrize("direction", ["generative", "discriminative"])
@pytest.mark.parametrize("pi", [1.0, 0.3])
def test_categorical_label_energy_rules_equal_autograd(direction, pi):
    """E = -pi log softmax(a)[y] for the label: the local error y - softmax(a) gives
    every latent and weight rule exactly (float64), the buffered settle included."""
    torch.manual_seed(8)
    spec = NetworkSpec(direction=direction, dims=DIMS, activations="tanh", label_energy="categorical",
                       precisions=[1.0, 1.0, 1.0, pi])
    net = build_network(spec, [DIMS[0]], C).double()
    x = torch.randn(B, DIMS[0], dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, C, (B,)), C).double()
    xs, free, _ = net.initial_state(x, y, "random", std=1.0)
    errors = net.errors(xs)
    gx = net.latent_gradients(errors, free)
    for g, a in zip([g for g in gx if g is not None], autograd_latent_grads(net, xs, free)):
        assert rel_err(g, a) < 1e-10
    pairs = net.weight_gradients(errors)
    for (p, g), a in zip(pairs, torch.autograd.grad(net.direct_energy(xs), [p for p, _ in pairs])):
        assert rel_err(g, a) < 1e-10
    with torch.no_grad():
        buf = ErrorBuffers(net, xs, free, [True] * len(net.terms))
        fused = buf.update(xs, first=True)
    for p, f in zip(errors, fused):
        assert torch.allclose(p.h, f.h, rtol=1e-12, atol=1e-14)
    assert torch.allclose(net.energies(errors).sum(), net.direct_energy(xs), rtol=1e-12)
    # label-free: the label node is the predicted distribution
    state, free2, _ = net.initial_state(x, None, "random", std=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        settle(net, state, free2, Inference(T_infer=3, eta_infer=0.05))
    assert torch.allclose(state[net.label].sum(1), torch.ones(B, dtype=torch.float64))


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_normalized_step_is_stable_where_a_fixed_one_diverges(schedule):
    """Weights scaled up 3x (as training grows them): a fixed eta_infer 0.5 makes the
    energy rise; the same eta as a fraction of each node's curvature bound descends."""
    from pcn_lightning.inference import step_sizes

    torch.manual_seed(9)
    net = build_network(NetworkSpec(direction="discriminative", dims=[12, 10, 8, 6], activations="tanh"), [12], 4).double()
    with torch.no_grad():
        for t in net.terms:
            t.map.weight.mul_(3.0)
    x = torch.randn(16, 12, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (16,)), 4).double()
    totals = {}
    for step_size in ("fixed", "normalized"):
        xs, free, _ = net.initial_state(x, y, "random", std=1.0, generator=torch.Generator().manual_seed(0))
        s = Inference(T_infer=30, eta_infer=0.5, schedule=schedule, step_size=step_size)
        with torch.no_grad():
            totals[step_size] = settle(net, xs, free, s, record=True).trace.sum(1)
    assert totals["fixed"][-1] > totals["fixed"][0]  # diverged
    t = totals["normalized"]
    assert (t[1:] <= t[:-1] + 1e-9).all() and t[-1] < t[0]
    # the bound: each free node's step is eta / (its pi + the next map's pi (f' ||W||)^2)
    xs, free, _ = net.initial_state(x, y, "random", std=1.0)
    etas = step_sizes(net, free, net.active_terms(free), Inference(eta_infer=0.5, step_size="normalized"))
    k = net.targets_of[1][0]  # the term predicting node 1, whose source is node 2
    out = net.sources_of[1][0]
    W = net.terms[out].map.weight
    assert etas[1] == pytest.approx(0.5 / (1.0 + torch.linalg.matrix_norm(W, 2).item() ** 2), rel=1e-3)


def test_one_fixed_sweep_turns_updates_away_from_backprop_once_weights_grow():
    """One sequential sweep from the feedforward state (the CIFAR configs' T_infer 1):
    node j moves by J^T h of the node below, then the node above it moves and re-predicts
    j, multiplying j's error by (I - f' J J^T f') for the map J above it. At a fixed step
    of 1 that factor flips the error's sign once ||J||^2 > 2 (weights grown in training:
    on real CIFAR-10 the energy exploded at step ~240); over the curvature bound
    ("normalized") it contracts and every update keeps backprop's direction."""
    from torch.nn.functional import cosine_similarity as cos

    from pcn_lightning.builders import twin_forward

    torch.manual_seed(3)
    dims = [12, 10, 10, 8]
    spec = NetworkSpec(direction="discriminative", dims=dims, activations="tanh", precisions=[1.0] * 3 + [1e-3])
    net = build_network(spec, [12], 4).double()
    with torch.no_grad():
        for t in net.terms:
            t.map.weight.mul_(4.0 / torch.linalg.matrix_norm(t.map.weight, 2))  # ||W|| 4, as grown weights
    x = torch.randn(32, 12, dtype=torch.float64) * 0.1  # small inputs: tanh' near 1
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (32,)), 4).double()
    bp = torch.autograd.grad(0.5 * (y - twin_forward(net, x)).pow(2).sum(), [t.map.weight for t in net.terms])
    cosines = {}
    for step_size in ("fixed", "normalized"):
        xs, free, _ = net.initial_state(x, y, "feedforward")
        with torch.no_grad():
            res = settle(net, xs, free, Inference(T_infer=1, eta_infer=1.0, schedule="sequential", step_size=step_size))
        pc = [g for _, g in net.weight_gradients(res.errors)]
        cosines[step_size] = [cos(g.flatten(), b.flatten(), dim=0).item() for g, b in zip(pc, bp)]
    assert min(cosines["fixed"]) < 0, cosines  # a hidden layer's update points uphill
    assert min(cosines["normalized"]) > 0.9, cosines


@pytest.mark.parametrize("layers", [
    None,  # an MLP of tanh layers
    [{"conv": {"channels": 3, "kernel": 3, "padding": 1}, "act": "gelu", "maxpool": 2},
     {"conv": {"channels": 4, "kernel": 3, "padding": 1}, "act": "gelu", "maxpool": 2},
     {"flatten": {}, "dense": {"bias": True}}],
])
@pytest.mark.parametrize("label_precision", [1.0, 0.01])
@pytest.mark.parametrize("label_energy", ["gaussian", "categorical"])
def test_errors_on_arrival_give_backprops_gradient_exactly(layers, label_precision, label_energy):
    """Z-IL's timing: each term learns from its error when the sweep reaches its source
    (`weight_errors: on_arrival`). One sequential sweep at eta 1 from the feedforward
    state then gives every parameter backprop's gradient times the label's precision,
    to float64 rounding, at any label precision and with grown weights (where the
    settled errors turn uphill: the test above)."""
    from pcn_lightning import PCNModule
    from pcn_lightning.builders import twin_forward

    torch.manual_seed(0)
    if layers is None:
        network = NetworkSpec(direction="discriminative", dims=[12, 10, 10, 8], activations="tanh",
                              precisions=[1.0] * 3 + [label_precision], label_energy=label_energy)
        shape, x = [12], torch.randn(16, 12, dtype=torch.float64) * 0.1
    else:
        network = NetworkSpec(direction="discriminative", layers=layers, precisions=[1.0, 1.0, label_precision],
                              label_energy=label_energy)
        shape, x = [2, 8, 8], torch.randn(16, 2, 8, 8, dtype=torch.float64)
    m = PCNModule(network, Inference(T_infer=1, eta_infer=1.0, schedule="sequential", latent_init="feedforward"),
                  learning=Learning(weight_errors="on_arrival"), input_shape=shape, output_dim=4).double()
    with torch.no_grad():
        for w in m.net.parameters():  # grown weights: ||J||^2 well over 2
            w.mul_(3.0 if w.dim() > 1 else 1.0)
    y = torch.randint(0, 4, (16,))
    pairs = m.local_gradients(x, y)
    params = [p for p, _ in pairs]
    assert len(params) == len(list(m.parameters()))
    scores = twin_forward(m.net, m.net.batch_input(x), logits=True)
    loss = (torch.nn.functional.cross_entropy(scores, y, reduction="sum") if label_energy == "categorical"
            else 0.5 * (torch.nn.functional.one_hot(y, 4).double() - scores).pow(2).sum())
    bp = torch.autograd.grad(loss, params)
    for (p, g), b in zip(pairs, bp):
        assert torch.allclose(g, label_precision * b, rtol=1e-9, atol=1e-12), p.shape
    # the settled errors' updates are not backprop's here (a map between two latents:
    # its source moves after its target)
    settled = dict(m.net.weight_gradients(m.settle_batch(x, y, generator=torch.Generator().manual_seed(0))[1].errors))
    W = next(iter(m.net.terms[1].map.parameters()))
    assert not torch.allclose(settled[W], label_precision * bp[[id(p) for p in params].index(id(W))], rtol=1e-3)


def test_errors_on_arrival_need_one_sweep_from_the_feedforward_state():
    from pcn_lightning import PCNModule
    from pcn_lightning.errors import ConfigError

    network = NetworkSpec(direction="discriminative", dims=[6, 5, 3])
    with pytest.raises(ConfigError, match=r"inference.schedule 'parallel' \(needs 'sequential'\), inference.T_infer 4 \(needs 1\)"):
        PCNModule(network, Inference(T_infer=4, latent_init="feedforward", schedule="parallel"),
                  learning=Learning(weight_errors="on_arrival"), output_dim=3)
