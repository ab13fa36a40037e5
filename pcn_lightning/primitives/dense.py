"""Dense: a = s * (phi(x) @ W.T) + b, the seed's predicting map.

W has shape (out, in): (size of the predicted layer, size of the predicting one).
`scale` s is a fixed multiplier applied in the prediction (muPC's per-layer
1/sqrt(fan-in) etc.: learning rates then transfer across width and depth);
`pre_activation` phi is applied to the source first (muPC's residual blocks
predict x(l) = x(l-1) + s W phi(x(l-1))); both default to off, the seed's map.

    transpose(h)  = s * (h @ W) * phi'(x)
    dE/dW         = -s * h.T @ phi(x)
    dE/db         = -sum_batch h
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from pcn_lightning.activations import Activation, get_activation
from pcn_lightning.settings import positive_int
from pcn_lightning.primitives.base import Map, Shape, register, spectral_norm

Tensor = torch.Tensor


@register("dense")
class Dense(Map):
    def __init__(self, in_shape: Shape, units: int, bias: bool = False, scale: float = 1.0,
                 pre_activation: Optional[str] = None) -> None:
        super().__init__(in_shape)
        if len(self.in_shape) != 1:
            raise_flat(self.in_shape)
        self.units = positive_int("units", units)
        self.scale = float(scale)
        self.pre: Optional[Activation] = None
        if pre_activation not in (None, "linear"):
            self.pre = get_activation(pre_activation)
        self.weight = nn.Parameter(torch.empty(self.units, self.in_shape[0]))
        self.bias = nn.Parameter(torch.zeros(self.units)) if bias else None
        self.reset_parameters()

    @property
    def out_shape(self) -> Shape:
        return (self.units,)

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        if init == "normal":
            nn.init.normal_(self.weight)
        else:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def lipschitz(self) -> float:
        W = self.weight.detach()
        norm = spectral_norm(lambda v: v @ W.T, lambda u: u @ W, self.in_shape, like=W)
        return abs(self.scale) * norm * (self.pre.max_slope if self.pre is not None else 1.0)

    def _source(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """phi(x) and phi'(x) (None when there is no pre-activation)."""
        if self.pre is None or self.pre.is_identity:
            return x, None
        u = self.pre.f(x)
        if self.pre.name == "relu":  # phi'(x) = 1 where x > 0: the sign of relu(x), one op
            return u, torch.sign(u)
        return u, self.pre.df(x)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        u, slope = self._source(x)
        a = u @ self.weight.T
        if self.scale != 1.0:
            a = a * self.scale
        if self.bias is not None:
            a = a + self.bias
        return a, (u, slope)

    def predict_into(self, x: Tensor, out: Tensor) -> Any:
        u, slope = self._source(x)
        if self.bias is not None:
            torch.addmm(self.bias, u, self.weight.T, alpha=self.scale, out=out)
        elif self.scale != 1.0:
            torch.addmm(out, u, self.weight.T, beta=0, alpha=self.scale, out=out)
        else:
            torch.matmul(u, self.weight.T, out=out)
        return (u, slope)

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        g = h @ self.weight
        if self.scale != 1.0:
            g = g * self.scale
        return g if ctx[1] is None else g * ctx[1]

    def transpose_add_(self, dst: Tensor, h: Tensor, ctx: Any, alpha: float) -> None:
        if ctx[1] is None:
            dst.addmm_(h, self.weight, alpha=alpha * self.scale)
        else:
            dst.addcmul_(h @ self.weight, ctx[1], value=alpha * self.scale)

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        g = (h.T @ ctx[0]).neg_() if self.scale == 1.0 else (h.T @ ctx[0]).mul_(-self.scale)
        return [g] if self.bias is None else [g, h.sum(0).neg_()]

    @classmethod
    def example(cls) -> "Dense":
        return cls((5,), units=4, bias=True, scale=0.7, pre_activation="tanh")


def raise_flat(in_shape: Shape) -> None:
    from pcn_lightning.errors import ConfigError

    raise ConfigError(
        f"dense needs a flat input but its source layer has shape {tuple(in_shape)}; "
        "put a flatten before it (e.g. {flatten: {}, dense: {units: 128}})"
    )


def fan_in(in_shape: Shape) -> int:
    return math.prod(in_shape)
