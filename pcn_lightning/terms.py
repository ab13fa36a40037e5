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
    """A Gaussian energy term pi/2 ||x_target - f(map(x_source))||^2.

    The precision pi is a number, or, once learned (`learn_precision`), the exp of a
    parameter: one for the term ("scalar") or one per predicted value ("unit", a
    diagonal precision), broadcast over the batch. Learned ones are read after each
    update (`refresh_precision`), never inside the settle loop.
    """

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
    def pi(self):
        """The precision: a float, or a tensor of the target's per-sample shape (per unit)."""
        return self.precision

    def learn_precision(self, shape: tuple = ()) -> nn.Parameter:
        """Make the precision a parameter (its log, starting at the current value);
        `shape` () for one per term, the target's shape for one per unit."""
        self.prior_mean = float(self.precision)
        like = next(self.map.parameters(), torch.zeros(()))
        self.log_precision = nn.Parameter(torch.full(tuple(shape), float(self.precision), dtype=like.dtype,
                                                     device=like.device).log())
        return self.log_precision

    def refresh_precision(self) -> None:
        """Read the learned precision after its parameter moved."""
        if self.log_precision is not None:
            pi = self.log_precision.detach().exp()
            self.precision = pi.item() if pi.dim() == 0 else pi

    def errors(self, x_target: Tensor, x_source: Tensor, a: Optional[Tensor] = None, ctx: Any = None) -> TermErrors:
        """The formulas, with fresh tensors (`a`, `ctx`: a prediction already made)."""
        if a is None:
            a, ctx = self.map.predict(x_source)
        eps = x_target - self.act.f(a)
        h = eps if self.act.is_identity else self.act.df(a) * eps
        pi = self.pi
        return TermErrors(a, ctx, eps, h if isinstance(pi, float) and pi == 1.0 else h * pi)

    def errors_into(self, out: TermErrors, x_target: Tensor) -> None:
        """The same numbers written into `out`, whose `a` already holds the prediction."""
        self.act.errors_into(out.a, x_target, out.eps, out.h)
        if not (isinstance(self.pi, float) and self.pi == 1.0):
            out.h.mul_(self.pi)

    def sub_scaled_error_(self, x: Tensor, err: TermErrors, eta: float) -> None:
        """x -= eta * pi * eps, in place (the term's pull on its target)."""
        if isinstance(self.pi, float):
            x.sub_(err.eps, alpha=eta * self.pi)
        else:
            x.addcmul_(err.eps, self.pi, value=-eta)

    def energy(self, err: TermErrors) -> Tensor:
        """pi/2 ||eps||^2, summed over the batch."""
        if isinstance(self.pi, float):
            return 0.5 * self.pi * torch.linalg.vector_norm(err.eps).square()
        return 0.5 * (self.pi * err.eps.square()).sum()

    def sample_energy(self, err: TermErrors) -> Tensor:
        """pi/2 ||eps_b||^2 for every sample b, shape (B,)."""
        if isinstance(self.pi, float):
            return 0.5 * self.pi * err.eps.pow(2).flatten(1).sum(1)
        return 0.5 * (self.pi * err.eps.pow(2)).flatten(1).sum(1)

    def shares_h_with_eps(self) -> bool:
        """h is eps itself (identity activation, precision 1): one buffer serves both."""
        return self.act.is_identity and isinstance(self.pi, float) and self.pi == 1.0

    def pi_max(self) -> float:
        return self.pi if isinstance(self.pi, float) else float(self.pi.max())

    def curvature_on_target(self) -> float:
        """Bound of this term's second derivative in its target: pi."""
        return self.pi_max()

    def curvature_on_source(self) -> float:
        """Bound of this term's second derivative in its source: pi (f'max L)^2 (Gauss-Newton)."""
        return self.pi_max() * (self.act.max_slope * self.map.lipschitz_bound()) ** 2

    def weight_grads(self, err: TermErrors) -> list[Tensor]:
        return self.map.weight_grads(err.h, err.ctx)

    def direct_energy(self, x_target: Tensor, x_source: Tensor) -> Tensor:
        """E written straight from its definition (for autograd in the tests)."""
        a, _ = self.map.predict(x_source)
        return 0.5 * (self.pi * (x_target - self.act.f(a)).pow(2)).sum()


def _softmax(a: Tensor) -> Tensor:
    return torch.softmax(a, 1)


def _no_slope(a: Tensor) -> Tensor:
    raise NotImplementedError("the categorical term's error is taken at the pre-activation (h = pi (y - softmax(a)))")


SOFTMAX = Activation("softmax", _softmax, _no_slope, low=0.0, high=1.0)


class CategoricalTerm(Term):
    """A categorical energy for a one-hot (or distribution) target: the negative
    log-likelihood of a softmax prediction,

        E = -pi sum_c y_c log softmax(a)_c          (summed over the batch)
        eps = y - softmax(a)        h = pi eps = -dE/da

    so the error is local (prediction minus target, as in the Gaussian term) and
    every rule of the map is unchanged. Its target must be clamped (a label); when
    the target is free (evaluation) the term is dropped and the node set to
    softmax(a), the predicted distribution.
    """

    def __init__(self, name: str, target: int, source: int, map: Map, precision: float = 1.0) -> None:
        super().__init__(name, target, source, map, SOFTMAX, precision)

    def errors(self, x_target: Tensor, x_source: Tensor, a: Optional[Tensor] = None, ctx: Any = None) -> TermErrors:
        if a is None:
            a, ctx = self.map.predict(x_source)
        eps = x_target - torch.softmax(a, 1)
        pi = self.pi
        return TermErrors(a, ctx, eps, eps if isinstance(pi, float) and pi == 1.0 else eps * pi)

    def errors_into(self, out: TermErrors, x_target: Tensor) -> None:
        torch.softmax(out.a, 1, out=out.eps)
        torch.sub(x_target, out.eps, out=out.eps)
        if out.h.data_ptr() != out.eps.data_ptr():
            torch.mul(out.eps, self.pi, out=out.h)
        elif not (isinstance(self.pi, float) and self.pi == 1.0):
            out.h.mul_(self.pi)

    def sub_scaled_error_(self, x: Tensor, err: TermErrors, eta: float) -> None:
        from pcn_lightning.errors import ConfigError

        raise ConfigError(f"{self.name}: a categorical term's target is a label; it must be clamped, not settled")

    def shares_h_with_eps(self) -> bool:
        return isinstance(self.pi, float) and self.pi == 1.0

    def curvature_on_source(self) -> float:
        """The softmax cross-entropy's Hessian in a is at most 1/2: pi L^2 / 2."""
        return self.pi_max() * 0.5 * self.map.lipschitz_bound() ** 2

    def _nll(self, err: TermErrors, target: Optional[Tensor] = None) -> Tensor:
        y = err.eps + torch.softmax(err.a, 1) if target is None else target
        return -(y * torch.log_softmax(err.a, 1))

    def energy(self, err: TermErrors) -> Tensor:
        return (self.pi * self._nll(err)).sum()

    def sample_energy(self, err: TermErrors) -> Tensor:
        return (self.pi * self._nll(err)).flatten(1).sum(1)

    def direct_energy(self, x_target: Tensor, x_source: Tensor) -> Tensor:
        a, _ = self.map.predict(x_source)
        return -(self.pi * x_target * torch.log_softmax(a, 1)).sum()
