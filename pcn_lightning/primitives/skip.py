"""Residual: an identity skip connection around a map.

The target is predicted by the source itself plus the map of it (a residual
layer; with the term's activation f: f(x + m(x))):

    predict:      a = x + m(x)
    transpose:    J^T h = h + J_m^T h
    weight_grads: the inner map's
"""

from __future__ import annotations

from typing import Any

import torch

from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map, Shape, build_map, register

Tensor = torch.Tensor


@register("residual")
class Residual(Map):
    def __init__(self, in_shape: Shape, inner: Any = None) -> None:
        super().__init__(in_shape)
        if isinstance(inner, dict):  # from a config: {residual: {dense: {units: 128}}}
            if len(inner) != 1:
                raise ConfigError(f"residual wraps one primitive, e.g. {{residual: {{dense: {{units: 64}}}}}}; got {inner}")
            (name, kwargs), = inner.items()
            inner = build_map(name, in_shape, kwargs)
        if not isinstance(inner, Map):
            raise ConfigError("residual needs the map it wraps, e.g. {residual: {dense: {units: 64}}}")
        if inner.out_shape != self.in_shape:
            raise ConfigError(f"a residual map must keep its input's shape {self.in_shape}; the inner map gives {inner.out_shape}")
        self.inner = inner

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def lipschitz(self) -> float:
        return 1.0 + self.inner.lipschitz()

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        a, ctx = self.inner.predict(x)
        return x + a, ctx

    def predict_into(self, x: Tensor, out: Tensor) -> Any:
        ctx = self.inner.predict_into(x, out)
        out.add_(x)
        return ctx

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h + self.inner.transpose(h, ctx)

    def transpose_add_(self, dst: Tensor, h: Tensor, ctx: Any, alpha: float) -> None:
        dst.add_(h, alpha=alpha)
        self.inner.transpose_add_(dst, h, ctx, alpha)

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        return self.inner.weight_grads(h, ctx)

    def transpose_and_weight_grads(self, h: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:
        back, grads = self.inner.transpose_and_weight_grads(h, ctx)
        return h + back, grads

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        self.inner.reset_parameters(init)

    @classmethod
    def example(cls) -> "Residual":
        from pcn_lightning.primitives.dense import Dense

        return cls((5,), Dense((5,), units=5, bias=True, scale=0.5, pre_activation="relu"))
