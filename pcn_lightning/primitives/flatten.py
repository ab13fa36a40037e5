"""Flatten: (C, H, W) -> (C*H*W,), a reshape with no parameters.

    predict: a = x.reshape(B, -1)      transpose: h.reshape(B, C, H, W)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pcn_lightning.primitives.base import Map, Shape, register

Tensor = torch.Tensor


@register("flatten")
class Flatten(Map):
    @property
    def out_shape(self) -> Shape:
        return (math.prod(self.in_shape),)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return x.reshape(x.shape[0], -1), None

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h.reshape(h.shape[0], *self.in_shape)

    @classmethod
    def example(cls) -> "Flatten":
        return cls((2, 3, 2))
