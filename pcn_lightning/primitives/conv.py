"""Conv2d: a = conv(x, W) + b, a convolution predicting the layer it maps to.

W has shape (C_out, C_in, k, k); stride and padding as in torch. The rules are
the convolution's transpose and its Hebbian correlation, each one library kernel
(no autograd):

    transpose(h)  = conv_transpose(h, W)   (output_padding chosen so the shape is x's)
    dE/dW[o,i,u,v] = -sum_{b,p,q} h[b,o,p,q] x_pad[b,i,s p+u,s q+v]   (h correlated with x)
    dE/db[o]      = -sum_{b,p,q} h[b,o,p,q]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import positive_int
from pcn_lightning.primitives.base import Map, Shape, register, spectral_norm

Tensor = torch.Tensor


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@register("conv")
class Conv2d(Map):
    def __init__(self, in_shape: Shape, channels: int, kernel: int = 3, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__(in_shape)
        if len(self.in_shape) != 3:
            raise ConfigError(f"conv needs an input of shape (channels, height, width); its source has shape {self.in_shape}")
        self.channels = positive_int("channels", channels)
        self.kernel = positive_int("kernel", kernel)
        self.stride = positive_int("stride", stride)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"padding must be an integer >= 0; got {padding!r}")
        self.padding = padding
        c, h, w = self.in_shape
        self.out_hw = (conv_out(h, kernel, stride, padding), conv_out(w, kernel, stride, padding))
        if min(self.out_hw) < 1:
            raise ConfigError(f"conv kernel {kernel} (padding {padding}) is larger than its input {self.in_shape}")
        # conv_transpose gives (o - 1) s - 2p + k; the rows the forward skipped come back as output_padding
        self.output_padding = tuple(i - ((o - 1) * stride - 2 * padding + kernel) for i, o in zip((h, w), self.out_hw))
        self.weight = nn.Parameter(torch.empty(self.channels, c, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(self.channels)) if bias else None
        self.reset_parameters()

    @property
    def out_shape(self) -> Shape:
        return (self.channels, *self.out_hw)

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        if init == "normal":
            nn.init.normal_(self.weight)
        else:  # torch's default for conv layers (kaiming-uniform, a=sqrt(5)), as PCX's and the twin's
            nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5)

    def lipschitz(self) -> float:
        W = self.weight.detach()
        return spectral_norm(lambda v: F.conv2d(v, W, None, self.stride, self.padding),
                             lambda u: F.conv_transpose2d(u, W, None, self.stride, self.padding, self.output_padding),
                             self.in_shape, like=W)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding), x

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return F.conv_transpose2d(h, self.weight, None, self.stride, self.padding, self.output_padding)

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        # the correlation of the error with the input: aten's convolution_backward asked
        # for the weight term only (a kernel call, not autograd)
        _, gw, _ = torch.ops.aten.convolution_backward(
            h, ctx, self.weight, None, [self.stride] * 2, [self.padding] * 2, [1, 1], False, [0, 0], 1,
            [False, True, False])
        grads = [gw.neg_()]
        if self.bias is not None:
            grads.append(h.sum((0, 2, 3)).neg_())
        return grads

    @classmethod
    def example(cls) -> "Conv2d":
        return cls((2, 7, 6), channels=3, kernel=3, stride=2, padding=1)
