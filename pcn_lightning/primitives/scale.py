"""A fixed multiplier, a = c x (no parameters): muPC's branch scaling in a residual
block (Innocenti et al. 2025), which keeps the sum of L residual branches of order
one without a normalization.

    predict:   a = c x
    transpose: J^T h = c h
"""

from __future__ import annotations

from typing import Any

import torch

from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map, Shape, register

Tensor = torch.Tensor


@register("scale")
class Scale(Map):
    """a = factor * x."""

    def __init__(self, in_shape: Shape, factor: float = 1.0) -> None:
        super().__init__(in_shape)
        if not (isinstance(factor, (int, float)) and factor > 0):
            raise ConfigError(f"scale: factor must be a positive number; got {factor!r}")
        self.factor = float(factor)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor:g}"

    def lipschitz(self) -> float:
        return self.factor

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return x * self.factor, None

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h * self.factor

    @classmethod
    def example(cls) -> "Scale":
        return cls((3, 4), factor=0.35)
