"""Energy terms: one layer predicting another, and the energy of its error.

A term joins a source node (the predicting layer) and a target node (the
predicted one) through a primitive map and an elementwise activation f, and owns
its precision pi (how much its error counts) and its energy (how the error is
scored). With the Gaussian energy, the seed's:

    a   = map.predict(x_source)
    eps = x_target - f(a)
    h   = pi * f'(a) * eps
    E   = pi/2 ||eps||^2                       (summed over the batch)

    dE/dx_target = pi * eps
    dE/dx_source = -map.transpose(h)
    dE/dtheta    = map.weight_grads(h)         (the Hebbian product)

The categorical energy (a label's cross-entropy) changes only how eps, h and E are
read from a and the target; every rule of the map is the same. The label is not a
special case: in the generative network it is one more node, predicted from the
top latent by a linear map (the seed's readout R); in the discriminative one it is
the bottom node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from pcn_lightning.activations import Activation
from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map

Tensor = torch.Tensor


@dataclass
class TermErrors:
    """What one term's prediction gives on the current state."""

    a: Tensor  # pre-activation of the prediction
    ctx: Any  # what the map's rules need (see primitives.base)
    eps: Tensor  # x_target - f(a)
    h: Tensor  # pi * f'(a) * eps: minus the energy's gradient in a


# ------------------------------------------------------------------ energies
class Gaussian:
    """E = 1/2 ||x - f(a)||^2 per sample (before the precision):
    eps = x - f(a), h = f'(a) eps = -dE/da."""

    name = "gaussian"
    settles_target = True  # the target may be a free latent: it moves by -pi eps

    def errors(self, act: Activation, a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        eps = x - act.f(a)
        return eps, (eps if act.is_identity else act.df(a) * eps)

    def errors_into(self, act: Activation, a: Tensor, x: Tensor, eps: Tensor, h: Tensor) -> None:
        act.errors_into(a, x, eps, h)

    def h_is_eps(self, act: Activation) -> bool:
        return act.is_identity

    def per_value(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        return 0.5 * eps.square()

    def total(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        return 0.5 * torch.linalg.vector_norm(eps).square()

    def per_sample(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        return 0.5 * eps.pow(2).flatten(1).sum(1)

    def direct(self, act: Activation, a: Tensor, x: Tensor) -> Tensor:
        return 0.5 * (x - act.f(a)).square()

    def source_curvature(self, act: Activation, lipschitz: float) -> float:
        """Bound of the second derivative in the source, per unit precision, through a
        map of Lipschitz bound L: (f'max L)^2 (Gauss-Newton)."""
        return (act.max_slope * lipschitz) ** 2


class Categorical:
    """E = -sum_c y_c log softmax(a)_c per sample (before the precision; c the last axis:
    one class distribution per position of a sequence), for a
    one-hot (or distribution) target y: eps = y - softmax(a), h = eps = -dE/da, so
    the error is local (target minus prediction, as in the Gaussian energy). Its
    target must be clamped (a label); when it is free (evaluation) the term is
    dropped and the node set to softmax(a), the predicted distribution."""

    name = "categorical"
    settles_target = False

    def errors(self, act: Activation, a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        eps = x - torch.softmax(a, -1)
        return eps, eps

    def errors_into(self, act: Activation, a: Tensor, x: Tensor, eps: Tensor, h: Tensor) -> None:
        torch.softmax(a, -1, out=eps)
        torch.sub(x, eps, out=eps)
        if h.data_ptr() != eps.data_ptr():
            h.copy_(eps)

    def h_is_eps(self, act: Activation) -> bool:
        return True

    def per_value(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        y = eps + torch.softmax(a, -1)  # the target, read back from the error
        return -(y * torch.log_softmax(a, -1))

    def total(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        return self.per_value(act, a, eps).sum()

    def per_sample(self, act: Activation, a: Tensor, eps: Tensor) -> Tensor:
        return self.per_value(act, a, eps).flatten(1).sum(1)

    def direct(self, act: Activation, a: Tensor, x: Tensor) -> Tensor:
        return -(x * torch.log_softmax(a, -1))

    def source_curvature(self, act: Activation, lipschitz: float) -> float:
        """The softmax cross-entropy's Hessian in a is at most 1/2: L^2 / 2."""
        return 0.5 * lipschitz ** 2


ENERGIES = {"gaussian": Gaussian(), "categorical": Categorical()}


def _softmax(a: Tensor) -> Tensor:
    return torch.softmax(a, -1)


def _no_slope(a: Tensor) -> Tensor:
    raise NotImplementedError("the categorical term's error is taken at the pre-activation (h = pi (y - softmax(a)))")


# what a categorical term predicts: f = softmax (its error never uses f')
SOFTMAX = Activation("softmax", _softmax, _no_slope, low=0.0, high=1.0)


# --------------------------------------------------------------------- terms
class Term(nn.Module):
    """An energy term pi * E(x_target, f(map(x_source))), E Gaussian (default) or
    categorical (`energy`).

    The precision pi is a tensor: a fixed one (a 0-dim float64 tensor on the CPU,
    used as a scalar by tensors of any device and dtype), or, once learned
    (`learn_precision`), the exp of a parameter: one for the term ("scalar") or one
    per predicted value ("unit", a diagonal precision), broadcast over the batch.
    Learned ones are read after each update (`refresh_precision`), never inside the
    settle loop. A precision of exactly one skips its multiplications.
    """

    def __init__(self, name: str, target: int, source: int, map: Map, activation: Activation,
                 precision: float = 1.0, energy: str = "gaussian") -> None:
        super().__init__()
        self.name = name
        self.target = target
        self.source = source
        self.map = map
        self.energy_fn = ENERGIES[energy]
        self.act = SOFTMAX if energy == "categorical" else activation
        self.prior_mean = float(precision)
        self.log_precision: Optional[nn.Parameter] = None
        self._set_precision(torch.tensor(float(precision), dtype=torch.float64))

    def _set_precision(self, pi: Tensor) -> None:
        self._pi = pi
        self.unit_precision = self.log_precision is None and bool((pi == 1).all())
        # one per term: its value as a number too, read here once (not in the settle loop),
        # for the in-place step's scale
        self._pi_number = float(pi) if pi.dim() == 0 else None

    @property
    def pi(self) -> Tensor:
        """The precision: shape (), or the target's per-sample shape (one per unit)."""
        return self._pi

    def learn_precision(self, shape: tuple = ()) -> nn.Parameter:
        """Make the precision a parameter (its log, starting at the current value);
        `shape` () for one per term, the target's shape for one per unit."""
        like = next(self.map.parameters(), torch.zeros(()))
        self.log_precision = nn.Parameter(torch.full(tuple(shape), self.prior_mean, dtype=like.dtype,
                                                     device=like.device).log())
        self.refresh_precision()
        return self.log_precision

    def refresh_precision(self) -> None:
        """Read the learned precision after its parameter moved."""
        if self.log_precision is not None:
            self._set_precision(self.log_precision.detach().exp())

    def errors(self, x_target: Tensor, x_source: Tensor, a: Optional[Tensor] = None, ctx: Any = None) -> TermErrors:
        """The formulas, with fresh tensors (`a`, `ctx`: a prediction already made)."""
        if a is None:
            a, ctx = self.map.predict(x_source)
        eps, h = self.energy_fn.errors(self.act, a, x_target)
        return TermErrors(a, ctx, eps, h if self.unit_precision else h * self.pi)

    def errors_into(self, out: TermErrors, x_target: Tensor) -> None:
        """The same numbers written into `out`, whose `a` already holds the prediction."""
        self.energy_fn.errors_into(self.act, out.a, x_target, out.eps, out.h)
        if not self.unit_precision:
            out.h.mul_(self.pi)

    def sub_scaled_error_(self, x: Tensor, err: TermErrors, eta: float) -> None:
        """x -= eta * pi * eps, in place (the term's pull on its target)."""
        if not self.energy_fn.settles_target:
            raise ConfigError(f"{self.name}: a {self.energy_fn.name} term's target is a label; it must be clamped, "
                              "not settled")
        if self._pi_number is not None:
            x.sub_(err.eps, alpha=eta * self._pi_number)
        else:
            x.addcmul_(err.eps, self.pi, value=-eta)

    def energy(self, err: TermErrors) -> Tensor:
        """pi E, summed over the batch."""
        if self.pi.dim() == 0:
            e = self.energy_fn.total(self.act, err.a, err.eps)
            return e if self.unit_precision else e * self._pi_number
        return (self.pi * self.energy_fn.per_value(self.act, err.a, err.eps)).sum()

    def sample_energy(self, err: TermErrors) -> Tensor:
        """pi E for every sample b, shape (B,)."""
        if self.pi.dim() == 0:
            e = self.energy_fn.per_sample(self.act, err.a, err.eps)
            return e if self.unit_precision else e * self._pi_number
        return (self.pi * self.energy_fn.per_value(self.act, err.a, err.eps)).flatten(1).sum(1)

    def shares_h_with_eps(self) -> bool:
        """h is eps itself (h = f'(a) eps = eps, precision 1): one buffer serves both."""
        return self.unit_precision and self.energy_fn.h_is_eps(self.act)

    def pi_max(self) -> float:
        """The largest precision, as a number (read once, not in the settle loop's steps)."""
        return self._pi_number if self._pi_number is not None else float(self.pi.max())

    def curvature_on_target(self) -> float:
        """Bound of this term's second derivative in its target: pi."""
        return self.pi_max()

    def curvature_on_source(self) -> float:
        """Bound of this term's second derivative in its source: pi times the energy's
        bound through a map of Lipschitz bound L (Gaussian: (f'max L)^2)."""
        return self.pi_max() * self.energy_fn.source_curvature(self.act, self.map.lipschitz_bound())

    def weight_grads(self, err: TermErrors) -> list[Tensor]:
        return self.map.weight_grads(err.h, err.ctx)

    def direct_energy(self, x_target: Tensor, x_source: Tensor) -> Tensor:
        """pi E written straight from its definition (for autograd in the tests)."""
        a, _ = self.map.predict(x_source)
        return (self.pi * self.energy_fn.direct(self.act, a, x_target)).sum()

    def extra_repr(self) -> str:
        pi = "learned" if self.log_precision is not None else f"{float(self.pi):g}"
        return f"{self.name}: node {self.source} -> node {self.target}, {self.energy_fn.name}, f={self.act.name}, pi={pi}"
