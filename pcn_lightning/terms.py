"""Energy terms: one layer predicting another, and the energy of its error.

A term joins a source node (the predicting layer) and a target node (the
predicted one) through a primitive map and an elementwise activation f, and owns
its precision pi (how much its error counts):

    a   = map.predict(x_source)
    eps = x_target - f(a)
    h   = pi * f'(a) * eps
    E   = pi/2 ||eps||^2                       (summed over the batch)

    dE/dx_target = pi * eps
    dE/dx_source = -map.transpose(h)
    dE/dtheta    = map.weight_grads(h)         (the Hebbian product)

The label is not a special case: in the generative network it is one more node,
predicted from the top latent by a linear map (the seed's readout R); in the
discriminative one it is the bottom node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from pcn_lightning.activations import Activation
from pcn_lightning.primitives.base import Map

Tensor = torch.Tensor


@dataclass
class TermErrors:
    """What one term's prediction gives on the current state."""

    a: Tensor  # pre-activation of the prediction
    ctx: Any  # what the map's rules need (see primitives.base)
    eps: Tensor  # x_target - f(a)
    h: Tensor  # pi * f'(a) * eps


class Term(nn.Module):
    """A Gaussian energy term pi/2 ||x_target - f(map(x_source))||^2."""

    def __init__(self, name: str, target: int, source: int, map: Map, activation: Activation,
                 precision: float = 1.0) -> None:
        super().__init__()
        self.name = name
        self.target = target
        self.source = source
        self.map = map
        self.act = activation
        self.precision = float(precision)
        self.log_precision: Optional[nn.Parameter] = None

    @property
    def pi(self) -> float:
        """The precision (a float: read once per update, never inside the settle loop)."""
        return self.precision

    def learn_precision(self) -> nn.Parameter:
        """Make the precision a parameter (its log, starting at the current value)."""
        self.log_precision = nn.Parameter(torch.tensor(self.precision).log())
        return self.log_precision

    def refresh_precision(self) -> None:
        """Read the learned precision after its parameter moved."""
        if self.log_precision is not None:
            self.precision = self.log_precision.detach().exp().item()

    def errors(self, x_target: Tensor, x_source: Tensor, a: Optional[Tensor] = None, ctx: Any = None) -> TermErrors:
        """The formulas, with fresh tensors (`a`, `ctx`: a prediction already made)."""
        if a is None:
            a, ctx = self.map.predict(x_source)
        eps = x_target - self.act.f(a)
        h = eps if self.act.is_identity else self.act.df(a) * eps
        pi = self.pi
        return TermErrors(a, ctx, eps, h * pi if pi != 1.0 else h)

    def errors_into(self, out: TermErrors, x_target: Tensor) -> None:
        """The same numbers written into `out`, whose `a` already holds the prediction."""
        self.act.errors_into(out.a, x_target, out.eps, out.h)
        if self.pi != 1.0:
            out.h.mul_(self.pi)

    def energy(self, err: TermErrors) -> Tensor:
        """pi/2 ||eps||^2, summed over the batch."""
        return 0.5 * self.pi * torch.linalg.vector_norm(err.eps).square()

    def sample_energy(self, err: TermErrors) -> Tensor:
        """pi/2 ||eps_b||^2 for every sample b, shape (B,)."""
        return 0.5 * self.pi * err.eps.pow(2).flatten(1).sum(1)

    def shares_h_with_eps(self) -> bool:
        """h is eps itself (identity activation, precision 1): one buffer serves both."""
        return self.act.is_identity and self.pi == 1.0

    def weight_grads(self, err: TermErrors) -> list[Tensor]:
        return self.map.weight_grads(err.h, err.ctx)

    def direct_energy(self, x_target: Tensor, x_source: Tensor) -> Tensor:
        """E written straight from its definition (for autograd in the tests)."""
        a, _ = self.map.predict(x_source)
        return 0.5 * self.pi * (x_target - self.act.f(a)).pow(2).sum()
