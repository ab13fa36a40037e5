"""Depth: the muPC parametrization keeps a deep residual PCN's scales O(1) at
initialization across depths (without it they blow up), parametrized networks
pass the autograd checks, and a 16-layer residual PCN trains through train.py."""

import pytest
import torch

from pcn_lightning import NetworkSpec, build_network


def residual(depth: int, parametrization: str, width: int = 128) -> NetworkSpec:
    return NetworkSpec(direction="discriminative", parametrization=parametrization, layers=[
        {"flatten": {}, "dense": {"units": width}},
        {"dense": {"units": width, "pre_activation": "relu"}, "skip": True, "repeat": depth - 1},
        {"dense": {"pre_activation": "relu"}}])


@pytest.mark.parametrize("depth", [4, 8, 16, 32, 64])
def test_mupc_keeps_the_scales_order_one_across_depth(depth):
    """At initialization (latents from the feedforward sweep, label clamped): every
    latent's mean square and the label's energy per sample stay O(1) with muPC, while
    the standard parametrization's grow exponentially with depth."""
    torch.manual_seed(0)
    x = torch.randn(64, 784)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (64,)), 10).float()
    out = {}
    for param in ("mupc", "standard"):
        net = build_network(residual(depth, param), [1, 28, 28], 10)
        xs, _, _ = net.initial_state(net.batch_input(x), y, "feedforward")
        scales = torch.tensor([xs[j].pow(2).mean().item() for j in net.latent_order])
        label_energy = (net.energies(net.errors(xs)) / 64)[-1].item()
        out[param] = (scales, label_energy)
    scales, label = out["mupc"]
    assert scales.min() > 0.3 and scales.max() < 3.0, scales
    assert 0.1 < label < 2.0
    std_scales, std_label = out["standard"]
    assert std_scales.max() > 1.3 ** depth / 2  # (1 + 1/2) per residual layer: exponential
    if depth >= 16:
        assert std_label > 100 * label


def test_parametrized_residual_network_rules_equal_autograd():
    torch.manual_seed(0)
    net = build_network(residual(5, "mupc", width=6), [1, 3, 3], 4).double()
    x = torch.randn(5, 9, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (5,)), 4).double()
    xs, free, _ = net.initial_state(net.batch_input(x), y, "random", 1.0)
    errors = net.errors(xs)
    grads = net.latent_gradients(errors, free)
    leaves = [v.detach().clone().requires_grad_(f) for v, f in zip(xs, free)]
    auto = torch.autograd.grad(net.direct_energy(leaves), [v for v, f in zip(leaves, free) if f])
    for g, a in zip([g for g in grads if g is not None], auto):
        assert ((g - a).norm() / a.norm()).item() < 1e-10
    pairs = net.weight_gradients(errors)
    for (p, g), a in zip(pairs, torch.autograd.grad(net.direct_energy(xs), [p for p, _ in pairs])):
        assert ((g - a).norm() / a.norm()).item() < 1e-10
    scales = [m.scale for t in net.terms for m in t.map.modules() if hasattr(m, "scale")]
    assert scales[0] == pytest.approx(1 / 3) and scales[-1] == pytest.approx(1 / 6)
    assert all(s == pytest.approx(1 / (6 * 6) ** 0.5) for s in scales[1:-1])  # L = 6 weight layers (jpc)




def test_a_block_sets_its_terms_precision():
    """`precision:` in a block is that block's term's precision (repeat copies it);
    given twice (block and the `precisions` list) or not positive: one clear error."""
    from pcn_lightning.errors import ConfigError

    spec = residual(4, "mupc")
    spec.layers[1] = {**spec.layers[1], "precision": 2.0}
    spec.layers[2] = {**spec.layers[2], "precision": 0.1}
    net = build_network(spec, [1, 28, 28], 10)
    assert [float(t.pi) for t in net.terms] == [1.0, 2.0, 2.0, 2.0, 0.1]
    spec.precisions = [1.0] * 5
    with pytest.raises(ConfigError, match="given twice"):
        build_network(spec, [1, 28, 28], 10)
    spec.precisions = None
    spec.layers[2] = {**spec.layers[2], "precision": -1}
    with pytest.raises(ConfigError, match="positive"):
        build_network(spec, [1, 28, 28], 10)
