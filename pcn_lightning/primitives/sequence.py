"""Per-position primitives over a sequence source of shape (T, d): what a
transformer block needs besides attention (`attention.py`).

- `token_dense`: the same linear map at every position, a = x W^T (+ b). On one-hot
  tokens it is the token embedding.
- `rmsnorm`: a = g * x / rms(x), rms(x) = sqrt(mean_d x^2 + eps), per position.
- `position`: a = x + P, a learned vector per position (positional information).

Each with its hand-written transpose and weight gradients (h = -dE/da):

    token_dense:  J^T h = h W                 dE/dW = -sum_{b,t} h^T x   dE/db = -sum h
    rmsnorm:      with n = x / r, u = g * h:
                  J^T h = (u - n mean_d(u n)) / r          dE/dg = -sum_{b,t} h n
    position:     J^T h = h                   dE/dP = -sum_b h
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map, Shape, register, spectral_norm
from pcn_lightning.settings import positive_int

Tensor = torch.Tensor


def _sequence(name: str, in_shape: Shape) -> None:
    if len(in_shape) != 2:
        raise ConfigError(f"{name} needs a sequence source of shape (positions, width); its source has shape "
                          f"{tuple(in_shape)}")


@register("token_dense")
class TokenDense(Map):
    """The same dense map at every position: (T, d_in) -> (T, units)."""

    def __init__(self, in_shape: Shape, units: int, bias: bool = False) -> None:
        super().__init__(in_shape)
        _sequence("token_dense", self.in_shape)
        self.units = positive_int("units", units)
        self.weight = nn.Parameter(torch.empty(self.units, self.in_shape[1]))
        self.bias = nn.Parameter(torch.zeros(self.units)) if bias else None
        self.reset_parameters()

    @property
    def out_shape(self) -> Shape:
        return (self.in_shape[0], self.units)

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        nn.init.normal_(self.weight) if init == "normal" else nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def lipschitz(self) -> float:
        W = self.weight.detach()
        return spectral_norm(lambda v: v @ W.T, lambda u: u @ W, (self.in_shape[1],), like=W)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        a = x @ self.weight.T
        return (a if self.bias is None else a + self.bias), x

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h @ self.weight

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        hf, xf = h.reshape(-1, h.shape[-1]), ctx.reshape(-1, ctx.shape[-1])
        g = -(hf.T @ xf)
        return [g] if self.bias is None else [g, -hf.sum(0)]

    @classmethod
    def example(cls) -> "TokenDense":
        return cls((4, 5), units=3, bias=True)


@register("rmsnorm")
class RMSNorm(Map):
    """a = g * x / sqrt(mean_d x^2 + eps) at every position, a learned gain g."""

    def __init__(self, in_shape: Shape, eps: float = 1e-6) -> None:
        super().__init__(in_shape)
        _sequence("rmsnorm", self.in_shape)
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.ones(self.in_shape[1]))

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        nn.init.ones_(self.gain)

    def lipschitz(self) -> float:
        """An estimate: the gain's largest value over the typical rms (inputs of unit rms)."""
        return float(self.gain.detach().abs().max())

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        r = (x.square().mean(-1, keepdim=True) + self.eps).sqrt()
        n = x / r
        return n * self.gain, (n, r)

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        n, r = ctx
        u = h * self.gain
        return (u - n * (u * n).mean(-1, keepdim=True)) / r

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        n = ctx[0]
        return [-(h * n).reshape(-1, n.shape[-1]).sum(0)]

    @classmethod
    def example(cls) -> "RMSNorm":
        return cls((4, 5), eps=1e-3)


@register("position")
class Position(Map):
    """a = x + P: a learned vector added at each position (learned positional information)."""

    def __init__(self, in_shape: Shape, std: float = 0.02) -> None:
        super().__init__(in_shape)
        _sequence("position", self.in_shape)
        self.std = float(std)
        self.table = nn.Parameter(torch.empty(self.in_shape))
        self.reset_parameters()

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        nn.init.normal_(self.table, std=1.0 if init == "normal" else self.std)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return x + self.table[: x.shape[-2]], None  # a shorter sequence (a prompt) takes the first rows

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        g = -h.sum(0)
        return [g] if g.shape[0] == self.in_shape[0] else [torch.cat([g, g.new_zeros(self.in_shape[0] - g.shape[0], g.shape[1])])]

    @classmethod
    def example(cls) -> "Position":
        return cls((4, 5), std=0.5)
