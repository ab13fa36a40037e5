"""Causal multi-head self-attention as a predictive coding primitive.

The source is a sequence of T vectors of width d (per-sample shape (T, d)); the
prediction is attention's output at every position, from that position and the
ones before it only:

    Q = X Wq^T,  K = X Wk^T,  V = X Wv^T          split into H heads of width d / H
    S = Q K^T / sqrt(d / H)   (j > i masked)       P = softmax(S) over j
    O = P V  (heads merged)                        a = O Wo^T

The rules, written out (h = -dE/da; every product below is per head, batched):

    G   = h Wo                                 the error at O
    dP  = G V^T,   dV = P^T G
    dS  = P * (dP - rowsum(dP * P))            softmax's transpose (0 where masked)
    dQ  = dS K / sqrt(d/H),   dK = dS^T Q / sqrt(d/H)
    transpose(h)    = dQ Wq + dK Wk + dV Wv    (J^T h, heads merged)
    weight_grads(h) = -(G_o^T ...): dWq = -dQ^T X, dWk = -dK^T X, dWv = -dV^T X,
                      dWo = -h^T O             (summed over batch and positions)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map, Shape, register, spectral_norm
from pcn_lightning.settings import positive_int

Tensor = torch.Tensor


@register("attention")
class CausalSelfAttention(Map):
    """Causal multi-head self-attention over a (T, d) source, no biases."""

    def __init__(self, in_shape: Shape, heads: int = 1) -> None:
        super().__init__(in_shape)
        if len(self.in_shape) != 2:
            raise ConfigError(f"attention needs a sequence source of shape (positions, width); its source has "
                              f"shape {self.in_shape}")
        self.heads = positive_int("heads", heads)
        T, d = self.in_shape
        if d % self.heads:
            raise ConfigError(f"attention: width {d} is not divisible by heads {self.heads}")
        self.wq, self.wk, self.wv, self.wo = (nn.Parameter(torch.empty(d, d)) for _ in range(4))
        self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1), persistent=False)
        self.reset_parameters()

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        for w in (self.wq, self.wk, self.wv, self.wo):
            nn.init.normal_(w) if init == "normal" else nn.init.xavier_uniform_(w)

    def _split(self, z: Tensor) -> Tensor:  # (B, T, d) -> (B, H, T, d/H)
        B, T, d = z.shape
        return z.view(B, T, self.heads, d // self.heads).transpose(1, 2)

    def _merge(self, z: Tensor) -> Tensor:  # (B, H, T, d/H) -> (B, T, d)
        B, H, T, e = z.shape
        return z.transpose(1, 2).reshape(B, T, H * e)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        scale = 1.0 / math.sqrt(self.in_shape[1] // self.heads)
        q, k, v = (self._split(x @ w.T) for w in (self.wq, self.wk, self.wv))
        s = (q @ k.transpose(-1, -2)) * scale
        n = x.shape[-2]  # up to the configured positions (a shorter prompt when sampling)
        p = torch.softmax(s.masked_fill(self.mask[:n, :n], float("-inf")), -1)
        o = self._merge(p @ v)
        return o @ self.wo.T, (x, q, k, v, p, o)

    def _backward(self, h: Tensor, ctx: Any) -> tuple[Tensor, Tensor, Tensor]:
        """The errors at Q, K and V (heads merged), from h = -dE/da."""
        _, q, k, v, p, _ = ctx
        scale = 1.0 / math.sqrt(self.in_shape[1] // self.heads)
        g = self._split(h @ self.wo)
        dp = g @ v.transpose(-1, -2)
        dv = p.transpose(-1, -2) @ g
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        dq = (ds @ k) * scale
        dk = (ds.transpose(-1, -2) @ q) * scale
        return self._merge(dq), self._merge(dk), self._merge(dv)

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return self._transpose(*self._backward(h, ctx))

    def _transpose(self, dq: Tensor, dk: Tensor, dv: Tensor) -> Tensor:
        return dq @ self.wq + dk @ self.wk + dv @ self.wv

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        return self._weight_grads(h, ctx, *self._backward(h, ctx))

    @staticmethod
    def _weight_grads(h: Tensor, ctx: Any, dq: Tensor, dk: Tensor, dv: Tensor) -> list[Tensor]:
        x, o = ctx[0], ctx[5]
        flat = lambda z: z.reshape(-1, z.shape[-1])
        X = flat(x)
        return [-(flat(dq).T @ X), -(flat(dk).T @ X), -(flat(dv).T @ X), -(flat(h).T @ flat(o))]

    def transpose_and_weight_grads(self, h: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:
        """Both rules from one softmax transpose (the errors at Q, K, V)."""
        back = self._backward(h, ctx)
        return self._transpose(*back), self._weight_grads(h, ctx, *back)

    def lipschitz(self) -> float:
        """An estimate, not a bound: the value path's ||Wo|| ||Wv|| (each output is a
        convex combination of values); the path through the scores depends on the data."""
        norms = [spectral_norm(lambda u, w=w.detach(): u @ w.T, lambda u, w=w.detach(): u @ w,
                               (self.in_shape[1],), like=w) for w in (self.wo, self.wv)]
        return norms[0] * norms[1]

    @classmethod
    def example(cls) -> "CausalSelfAttention":
        return cls((5, 6), heads=2)
