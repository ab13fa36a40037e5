"""Act: an elementwise activation as a map, for activations inside a block (e.g.
PCX's VGG blocks conv -> GELU -> max-pool, whose latent sits after the pool; GELU
is not monotonic, so it does not commute with the pool).

    predict: a = f(x)      transpose: h * f'(x) (the slope kept in ctx at predict time)
"""

from __future__ import annotations

from typing import Any

import torch

from pcn_lightning.activations import get_activation
from pcn_lightning.primitives.base import Map, Shape, register

Tensor = torch.Tensor


@register("act")
class Act(Map):
    def __init__(self, in_shape: Shape, fn: str = "relu") -> None:
        super().__init__(in_shape)
        self.fn = get_activation(fn)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def lipschitz(self) -> float:
        return self.fn.max_slope

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return self.fn.f(x), (None if self.fn.is_identity else self.fn.df(x))

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h if ctx is None else h * ctx

    @classmethod
    def example(cls) -> "Act":
        return cls((3, 4), "tanh")
