"""Elementwise activations f and their derivatives f', chosen per layer by name.

Each activation also states the range of values it can produce, which the
prediction-range diagnostic (the seed's failure 6c) checks clamped data against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from pcn_lightning.errors import ConfigError

Tensor = torch.Tensor

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity f with its derivative f' and output range."""

    name: str
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]
    low: float = -math.inf  # infimum of the values f can produce
    high: float = math.inf  # supremum of the values f can produce
    # True when f'(a) == 1 everywhere: h = eps and the multiply can be skipped.
    is_identity: bool = False
    max_slope: float = 1.0  # sup |f'|: bounds how much the activation can stretch an error

    def errors_into(self, a: Tensor, x: Tensor, eps: Tensor, h: Tensor) -> None:
        """eps = x - f(a) and h = f'(a) * eps, written into the given buffers.

        The same numbers as the formulas, without allocating tensors of the layer's
        size on every inference step (ReLU and linear need no temporaries at all).
        """
        if self.is_identity:
            torch.sub(x, a, out=eps)
            if h.data_ptr() != eps.data_ptr():
                h.copy_(eps)
        elif self.name == "relu":
            torch.clamp_min(a, 0.0, out=h)  # h holds f(a) for a moment,
            torch.sub(x, h, out=eps)
            torch.sign(h, out=h)  # then f'(a) = 1 where a > 0, else 0 (no mask tensor:
            h.mul_(eps)  # a bool mask and its float copy cost 3x as much)
        else:
            torch.sub(x, self.f(a), out=eps)
            torch.mul(self.df(a), eps, out=h)

    def share_out_of_range(self, values: Tensor) -> float:
        """Share of `values` outside [low, high], which f cannot produce even in the limit.

        The bounds themselves count as reachable (a sigmoid approaches 0 for very
        negative inputs): only a hard gap, such as a ReLU asked for -0.4, is flagged.
        """
        return ((values < self.low) | (values > self.high)).float().mean().item()


def _relu_df(a: Tensor) -> Tensor:
    return (a > 0).to(a.dtype)


def _leaky_relu_df(a: Tensor) -> Tensor:
    return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, LEAKY_SLOPE))


def _sigmoid_df(a: Tensor) -> Tensor:
    s = torch.sigmoid(a)
    return s * (1 - s)


def _gelu_df(a: Tensor) -> Tensor:
    """d/da a Phi(a) = Phi(a) + a phi(a) (the exact, erf-based GELU)."""
    cdf = 0.5 * (1 + torch.erf(a * (0.5 ** 0.5)))
    pdf = torch.exp(-0.5 * a * a) * (2 * math.pi) ** -0.5
    return cdf + a * pdf


def _tanh_df(a: Tensor) -> Tensor:
    t = torch.tanh(a)
    return 1 - t * t


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation("linear", lambda a: a, torch.ones_like, is_identity=True),
    "relu": Activation("relu", torch.relu, _relu_df, low=0.0),
    "leaky_relu": Activation(
        "leaky_relu",
        lambda a: torch.nn.functional.leaky_relu(a, LEAKY_SLOPE),
        _leaky_relu_df,
    ),
    "tanh": Activation("tanh", torch.tanh, _tanh_df, low=-1.0, high=1.0),
    "gelu": Activation("gelu", torch.nn.functional.gelu, _gelu_df, low=-0.17, max_slope=1.13),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_df, low=0.0, high=1.0, max_slope=0.25),
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name, with a clear error for an unknown one."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)} "
            "(set --model.activations)"
        ) from None
