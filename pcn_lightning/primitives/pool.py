"""Pooling: MaxPool2d and AvgPool2d, maps with no parameters.

MaxPool2d:  a = max over each window; the error goes back to the window's
            winner only (transpose scatters h to the winning inputs, adding where
            overlapping windows share one): a local rule, the winner's index kept
            in ctx at predict time.
AvgPool2d:  a = mean over each window (padding counted as zeros); transpose
            spreads h evenly back over the window (a transposed convolution with a
            uniform kernel per channel).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import positive_int
from pcn_lightning.primitives.base import Map, Shape, register
from pcn_lightning.primitives.conv import conv_out

Tensor = torch.Tensor


class _Pool(Map):
    def __init__(self, in_shape: Shape, kernel: int = 2, stride: Optional[int] = None, padding: int = 0) -> None:
        super().__init__(in_shape)
        if len(self.in_shape) != 3:
            raise ConfigError(f"{self.registry_name} needs an input of shape (channels, height, width); "
                              f"its source has shape {self.in_shape}")
        self.kernel = positive_int("kernel", kernel)
        self.stride = positive_int("stride", stride if stride is not None else kernel)
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= kernel // 2:
            raise ConfigError(f"padding must be an integer in 0..kernel/2; got {padding!r}")
        self.padding = padding
        c, h, w = self.in_shape
        self.out_hw = (conv_out(h, kernel, self.stride, padding), conv_out(w, kernel, self.stride, padding))
        if min(self.out_hw) < 1:
            raise ConfigError(f"{self.registry_name} kernel {kernel} is larger than its input {self.in_shape}")

    @property
    def out_shape(self) -> Shape:
        return (self.in_shape[0], *self.out_hw)

    def lipschitz(self) -> float:
        """An input lies in at most ceil(k/s)^2 windows: ||J|| <= ceil(k/s) (1 without overlap)."""
        return float(-(-self.kernel // self.stride))


@register("maxpool")
class MaxPool2d(_Pool):
    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        a, idx = F.max_pool2d(x, self.kernel, self.stride, self.padding, return_indices=True)
        return a, idx

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        B, C = h.shape[:2]
        out = h.new_zeros(B, C, self.in_shape[1] * self.in_shape[2])
        out.scatter_add_(2, ctx.flatten(2), h.flatten(2))
        return out.view(B, C, *self.in_shape[1:])

    @classmethod
    def example(cls) -> "MaxPool2d":
        return cls((2, 7, 6), kernel=3, stride=2, padding=1)


@register("avgpool")
class AvgPool2d(_Pool):
    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding), None

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        C, k = self.in_shape[0], self.kernel
        uniform = h.new_full((C, 1, k, k), 1.0 / (k * k))
        o_pad = tuple(i - ((o - 1) * self.stride - 2 * self.padding + k) for i, o in zip(self.in_shape[1:], self.out_hw))
        return F.conv_transpose2d(h, uniform, None, self.stride, self.padding, o_pad, groups=C)

    @classmethod
    def example(cls) -> "AvgPool2d":
        return cls((2, 7, 6), kernel=3, stride=2, padding=1)
