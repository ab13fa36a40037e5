"""Every classifier is a generator: clamp the label's source node and run the
predictions down to the data (networks whose predictions flow to the data)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from pcn_lightning.errors import ConfigError
from pcn_lightning import seeding
from pcn_lightning.network import PCNetwork

Tensor = torch.Tensor


def label_term(net: PCNetwork) -> int:
    return net.label_term


def check_generative(net: PCNetwork) -> None:
    if not net.targets_of[net.data]:
        raise ConfigError("generate() needs direction='generative' (a network whose predictions flow down to the data)")


def least_norm_top(net: PCNetwork, classes: Tensor) -> Tensor:
    """The least-norm top latent whose readout is exactly each class: one_hot(c) @ pinv(R).T."""
    R = net.terms[label_term(net)].map.weight
    Y = F.one_hot(classes.to(R.device), net.num_classes).to(R.dtype)
    return Y @ torch.linalg.pinv(R).T


def top_down(net: PCNetwork, top: Tensor) -> Tensor:
    """Predictions from a top latent all the way down to the data (every error zero there)."""
    src = net.terms[label_term(net)].source
    xs = [None] * len(net.nodes)
    xs[src] = top
    order = net._sweep_order_from(xs, [k for k, t in enumerate(net.terms) if t.target not in (net.label, src)])
    net.sweep(xs, net.terms, order)
    return xs[net.data]


@torch.no_grad()
def class_prototypes(module, x: Tensor, y: Tensor) -> Tensor:
    """Mean settled top latent of each class (C, d), from labelled data settled as in
    training; a class absent from y gets its least-norm top latent."""
    net = module.net
    xs, _ = module.settle_batch(x, y, generator=seeding.generator(module.seed, seeding.CLASS_STREAM))
    top = xs[net.terms[label_term(net)].source]
    protos = least_norm_top(net, torch.arange(net.num_classes, device=top.device))
    for c in range(net.num_classes):
        if (y == c).any():
            protos[c] = top[y == c].mean(0)
    return protos


def checked_classes(net: PCNetwork, classes) -> Tensor:
    """Class indices (B,) as users hand them over (a tensor of any integer dtype, device or
    layout, or a list; B may be 0 or 1), on the weights' device; else one ConfigError."""
    classes = torch.as_tensor(classes)
    if classes.dtype == torch.bool or classes.is_floating_point() or classes.is_complex():
        raise ConfigError(f"classes must be integer class indices; got {classes.dtype} (pass classes.long())")
    if classes.dim() != 1:
        raise ConfigError(f"classes must be one index per sample, shape (B,); got shape {tuple(classes.shape)} "
                          "(pass classes.reshape(-1))")
    C = net.num_classes
    if classes.numel() and not (0 <= int(classes.min()) and int(classes.max()) < C):
        raise ConfigError(f"classes must lie in [0, {C}); got values from {int(classes.min())} to {int(classes.max())}")
    return classes.to(net.terms[label_term(net)].map.weight.device, torch.long)


@torch.no_grad()
def generate(net: PCNetwork, classes: Tensor, noise_std: float = 0.0, generator: Optional[torch.Generator] = None,
             prototypes: Optional[Tensor] = None) -> Tensor:
    """The data (B, *input_shape) the network predicts for each class: the top latent
    clamped to the class's prototype (or least-norm latent), plus optional noise."""
    check_generative(net)
    classes = checked_classes(net, classes)
    R = net.terms[label_term(net)].map.weight
    top = prototypes.to(R.device, R.dtype)[classes] if prototypes is not None else least_norm_top(net, classes)
    if noise_std > 0:
        top = top + noise_std * torch.randn(top.shape, generator=generator, dtype=top.dtype).to(top.device)
    return top_down(net, top)
