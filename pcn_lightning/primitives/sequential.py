"""Sequential: maps applied one after the other inside one term (e.g. conv then
max-pool, with the latent after the pool, as in PCX's VGG blocks).

    predict:      a = m_k(...m_1(x))
    transpose:    J^T h = J_1^T (... J_k^T h)
    weight_grads: each map's rule at the error that reached it

The chain rule inside one term is local to the two layers the term joins.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pcn_lightning.primitives.base import Map, Shape

Tensor = torch.Tensor


class Sequential(Map):
    def __init__(self, in_shape: Shape, maps: Sequence[Map]) -> None:
        super().__init__(in_shape)
        self.maps = nn.ModuleList(maps)

    @property
    def out_shape(self) -> Shape:
        return self.maps[-1].out_shape

    def lipschitz(self) -> float:
        out = 1.0
        for m in self.maps:
            out *= m.lipschitz()
        return out

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        ctxs = []
        for m in self.maps:
            x, ctx = m.predict(x)
            ctxs.append(ctx)
        return x, ctxs

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        for m, c in zip(reversed(self.maps), reversed(ctx)):
            h = m.transpose(h, c)
        return h

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        grads: list[list[Tensor]] = []
        for i in range(len(self.maps) - 1, -1, -1):
            m, c = self.maps[i], ctx[i]
            grads.insert(0, m.weight_grads(h, c))
            if i > 0 and any(True for _ in self.maps[:i].parameters()):
                h = m.transpose(h, c)
        return [g for gs in grads for g in gs]

    def transpose_and_weight_grads(self, h: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:
        grads: list[list[Tensor]] = []
        for m, c in zip(reversed(self.maps), reversed(ctx)):
            h, g = m.transpose_and_weight_grads(h, c)
            grads.insert(0, g)
        return h, [g for gs in grads for g in gs]

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        for m in self.maps:
            m.reset_parameters(init)
