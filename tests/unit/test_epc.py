"""ePC, the errors as the state: its gradient is autograd's of the reparametrized energy,
its settle reaches state PC's minimum, and it refuses what it cannot do (float64)."""

import pytest
import torch
import torch.nn.functional as F

from pcn_lightning import NetworkSpec, PCNModule, build_network, settle
from pcn_lightning.epc import ErrorState, check_supported, settle_errors
from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import Inference
from tests.helpers import rel_err

B = 6


def network(label_energy="gaussian", layers=None):
    torch.manual_seed(0)
    if layers is None:
        spec = NetworkSpec(direction="discriminative", dims=[7, 6, 5], activations="tanh", label_energy=label_energy)
        return build_network(spec, [7], 3).double(), torch.randn(B, 7, dtype=torch.float64)
    spec = NetworkSpec(direction="discriminative", layers=layers, label_energy=label_energy)
    return build_network(spec, [2, 8, 8], 3).double(), torch.randn(B, 2, 8, 8, dtype=torch.float64)


CONV = [{"conv": {"channels": 3, "kernel": 3, "padding": 1}, "act": "gelu", "maxpool": 2},
        {"flatten": {}, "dense": {"bias": True}}]


def clamped_start(net, x):
    y = F.one_hot(torch.randint(0, 3, (B,), generator=torch.Generator().manual_seed(1)), 3).double()
    return net.initial_state(x, y, "feedforward")


@pytest.mark.parametrize("label_energy", ["gaussian", "categorical"])
@pytest.mark.parametrize("layers", [None, CONV], ids=["mlp", "conv"])
def test_epc_gradient_is_autograd_of_the_energy_in_the_errors(label_energy, layers):
    net, x = network(label_energy, layers)
    xs, free, _ = clamped_start(net, x)
    state = ErrorState(net, xs, free)
    g = torch.Generator().manual_seed(2)
    for e in state.e.values():
        e.copy_(0.3 * torch.randn(e.shape, generator=g, dtype=e.dtype))
    with torch.no_grad():
        state.forward()
        grads = state.gradients(state.errors([True] * len(net.terms)))
    # E(e) from its definition: the forward pass x = f(map(x_source)) + e, then every term's energy
    leaves = {j: e.detach().clone().requires_grad_(True) for j, e in state.e.items()}
    ys = list(xs)
    for k in state.order:
        t = net.terms[k]
        ys[t.target] = t.act.f(t.map.predict(ys[t.source])[0]) + leaves[t.target]
    E = net.direct_energy(ys)
    auto = torch.autograd.grad(E, list(leaves.values()))
    for (j, leaf), a in zip(leaves.items(), auto):
        assert rel_err(grads[j], a) < 1e-10, net.nodes[j].name


@pytest.mark.parametrize("step_size,eta", [("fixed", 0.2), ("normalized", 1.0)])
@pytest.mark.parametrize("layers", [None, CONV], ids=["mlp", "conv"])
def test_epc_settles_to_state_pcs_minimum(layers, step_size, eta):
    """Settled to convergence, the errors as the state and the latents as the state end at
    the same latents and the same weight updates."""
    net, x = network("gaussian", layers)
    a, free, _ = clamped_start(net, x)
    b = [t.clone() if t is not None else None for t in a]
    with torch.no_grad():
        epc = settle_errors(net, a, free, Inference(T_infer=1500, eta_infer=eta, latent_init="feedforward",
                                                    state="errors", step_size=step_size))
        pc = settle(net, b, free, Inference(T_infer=4000, eta_infer=0.1, latent_init="feedforward"))
    for j, f in enumerate(free):
        if f:
            assert rel_err(a[j], b[j]) < 1e-8, net.nodes[j].name
    ge, gp = dict(net.weight_gradients(epc.errors)), dict(net.weight_gradients(pc.errors))
    for p in ge:
        assert rel_err(ge[p], gp[p]) < 1e-6


def test_a_module_trains_with_the_errors_as_the_state():
    m = PCNModule(NetworkSpec(direction="discriminative", layers=CONV, precisions=[1.0, 0.1]),
                  Inference(T_infer=5, eta_infer=0.3, latent_init="feedforward", state="errors"),
                  input_shape=[2, 8, 8], output_dim=3).double()
    x = torch.randn(B, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (B,))
    pairs = m.local_gradients(x, y)
    xs, result = m.settle_batch(x, y)
    params, auto = [p for p, _ in pairs], torch.autograd.grad(m.net.direct_energy([t.detach() for t in xs]),
                                                              [p for p, _ in pairs])
    for (p, g), a in zip(pairs, auto):  # the Hebbian rule at the ePC state is dE/dtheta there
        assert rel_err(g, a) < 1e-8
    assert result.trace is None and result.steps == 5


@pytest.mark.parametrize("make,message", [
    (lambda: Inference(state="errors", schedule="sequential", latent_init="feedforward"),
     r"state 'errors' \(ePC\).*schedule 'sequential' \(needs 'parallel'\)"),
    (lambda: Inference(state="errors", latent_init="random"), r"latent_init 'random' \(needs 'feedforward'\)"),
    (lambda: Inference(state="bits"), r"unknown state 'bits'"),
    (lambda: check_supported(build_network(NetworkSpec(direction="generative", dims=[7, 6, 5]), [7], 3)),
     r"predicted by several terms here|needs direction='discriminative'"),
])
def test_bad_epc_settings_get_one_clear_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
