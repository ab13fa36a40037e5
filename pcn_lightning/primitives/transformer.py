"""The transformer block as one predictive coding map: a pre-norm block of two
residual sublayers, built from the sequence primitives (`attention.py`, `sequence.py`):

    u = x + Drop(s Attention(N(x)))                    causal multi-head self-attention
    a = u + Drop(s W2 act(W1 N(u)))                    the per-position MLP (width mlp_ratio * d)

N: `norm`, RMSNorm (the default) or none. s: `branch_scale` (1 by default), muPC's
multiplier for a residual branch (1/sqrt(number of branches) keeps their sum of
order one without a norm: `norm: none, branch_scale: 0.35` for 4 blocks). Drop: the
`dropout` primitive at rate `dropout`; none at 0; the identity outside training,
where nothing arms it.

In a network description one block is one term: its source is the block's input
latent, its target the block's output latent, `a` the prediction of that target.
Its rules are its parts' rules composed (`Sequential`, `Residual`): the chain rule
inside one term is local to the two latents it joins, exactly as in a conv block.
"""

from __future__ import annotations

from typing import Any

import torch

from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.act import Act
from pcn_lightning.primitives.attention import CausalSelfAttention
from pcn_lightning.primitives.base import Map, Shape, register
from pcn_lightning.primitives.dropout import Dropout
from pcn_lightning.primitives.scale import Scale
from pcn_lightning.primitives.sequence import RMSNorm, TokenDense
from pcn_lightning.primitives.sequential import Sequential
from pcn_lightning.primitives.skip import Residual
from pcn_lightning.settings import positive_int

Tensor = torch.Tensor
NORMS = ("rmsnorm", "none")


@register("transformer_block")
class TransformerBlock(Map):
    """A transformer block over a (T, d) source: attention and MLP sublayers with residuals (pre-norm by default)."""

    def __init__(self, in_shape: Shape, heads: int = 4, mlp_ratio: int = 4, activation: str = "gelu",
                 init_gain: float = 1.0, dropout: float = 0.0, norm: str = "rmsnorm",
                 branch_scale: float = 1.0) -> None:
        super().__init__(in_shape)
        if len(self.in_shape) != 2:
            raise ConfigError(f"transformer_block needs a sequence source of shape (positions, width); its source "
                              f"has shape {self.in_shape} (put a token_dense embedding before it)")
        d = self.in_shape[1]
        width = positive_int("mlp_ratio", mlp_ratio) * d

        if not (isinstance(branch_scale, (int, float)) and branch_scale > 0):
            raise ConfigError(f"transformer_block: branch_scale must be a positive number; got {branch_scale!r}")
        if norm not in NORMS:
            raise ConfigError(f"transformer_block: norm must be one of {NORMS}; got {norm!r}")

        def pre() -> list:  # the sublayer's normalization
            return [RMSNorm(self.in_shape)] if norm == "rmsnorm" else []

        def post() -> list:  # after each sublayer, before its residual
            return (([Scale(self.in_shape, branch_scale)] if branch_scale != 1 else [])
                    + ([Dropout(self.in_shape, dropout)] if dropout else []))

        attention = Residual(self.in_shape, Sequential(self.in_shape, pre() + [
            CausalSelfAttention(self.in_shape, heads)] + post()))
        hidden = (self.in_shape[0], width)
        mlp = Residual(self.in_shape, Sequential(self.in_shape, pre() + [
            TokenDense(self.in_shape, width), Act(hidden, activation), TokenDense(hidden, d)] + post()))
        self._attention_index = len(pre())
        self.body = Sequential(self.in_shape, [attention, mlp])
        if not (isinstance(init_gain, (int, float)) and init_gain > 0):
            raise ConfigError(f"transformer_block: init_gain must be a positive number; got {init_gain!r}")
        self.init_gain = float(init_gain)
        self.reset_parameters()

    @property
    def attention(self) -> CausalSelfAttention:
        return self.body.maps[0].inner.maps[self._attention_index]

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.attention.heads}"

    def attention_probabilities(self, ctx: Any) -> Tensor:
        """The attention's softmax probabilities (B, heads, T, T) kept in a prediction's ctx."""
        return ctx[0][self._attention_index][4]  # body -> attention sublayer -> attention's (x, q, k, v, p, o)

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        return self.body.predict(x)

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return self.body.transpose(h, ctx)

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        return self.body.weight_grads(h, ctx)

    def transpose_and_weight_grads(self, h: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:
        return self.body.transpose_and_weight_grads(h, ctx)

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        """Every weight matrix by `init`, times `init_gain` (the norms' gains stay 1). A
        smaller gain keeps the block near the identity: a well-conditioned settle (the
        settled errors of tests/unit/test_transformer.py)."""
        self.body.reset_parameters(init)
        with torch.no_grad():
            for name, p in self.body.named_parameters():
                if p.dim() == 2:
                    p.mul_(self.init_gain)

    def lipschitz(self) -> float:
        return self.body.lipschitz()

    @classmethod
    def example(cls) -> "TransformerBlock":
        block = cls((5, 4), heads=2, mlp_ratio=2, init_gain=0.7, dropout=0.3)
        g = torch.Generator().manual_seed(0)
        for m in block.modules():  # armed: the generic test sees the dropped block
            if isinstance(m, Dropout):
                m.generator = g
        return block
