"""Dropout as a map whose mask holds still for a batch.

    predict:   a = m * x          m_i = 1 / (1 - p) with probability 1 - p, else 0
    transpose: m * h              (the same mask, kept in ctx)

A settle predicts the same term many times for one batch; the network it learns in
must be one network for the whole settle, so the mask is drawn once, at the first
prediction after `dropout_masks(net, generator)` arms the maps, and reused until the
`with` block ends. Outside that block (validation, sampling, tests of other maps)
the map is the identity. The backprop twin arms its maps with a generator seeded
the same way, so both models drop the same units of the same batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from pcn_lightning import seeding
from pcn_lightning.errors import ConfigError
from pcn_lightning.primitives.base import Map, Shape, register

Tensor = torch.Tensor


@register("dropout")
class Dropout(Map):
    """Inverted dropout with rate `p`, the identity unless armed by `dropout_masks`."""

    def __init__(self, in_shape: Shape, p: float = 0.1) -> None:
        super().__init__(in_shape)
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ConfigError(f"dropout: p must be a number in [0, 1); got {p!r}")
        self.p = float(p)
        self.generator: Optional[torch.Generator] = None  # armed: draw the mask from this
        self.mask: Optional[Tensor] = None  # this batch's mask, once drawn

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"

    def batch_mask(self, x: Tensor) -> Optional[Tensor]:
        """The armed batch's mask (drawn at the first call), or None when not armed."""
        if self.generator is None or self.p == 0.0:
            return None
        if self.mask is None:
            keep = torch.rand(x.shape, generator=self.generator, device=self.generator.device, dtype=x.dtype)
            self.mask = (keep.to(x.device) >= self.p).to(x.dtype) / (1.0 - self.p)
        elif self.mask.shape != x.shape:
            raise ValueError(f"dropout: one armed batch predicted from sources of two shapes, {tuple(self.mask.shape)} "
                             f"and {tuple(x.shape)}; arm the maps again (dropout_masks) for each batch")
        return self.mask

    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        mask = self.batch_mask(x)
        return (x, None) if mask is None else (x * mask, mask)

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        return h if ctx is None else h * ctx

    @classmethod
    def example(cls) -> "Dropout":
        m = cls((3, 4), p=0.4)
        m.generator = torch.Generator().manual_seed(0)
        return m


@contextmanager
def dropout_masks(module: nn.Module, generator: torch.Generator) -> Iterator[int]:
    """Arm every `Dropout` in `module` with `generator` for one batch: each draws its
    mask at its first prediction and keeps it until the block ends. Yields how many
    maps were armed."""
    maps = [m for m in module.modules() if isinstance(m, Dropout)]
    for m in maps:
        m.generator, m.mask = generator, None
    try:
        yield len(maps)
    finally:
        for m in maps:
            m.generator, m.mask = None, None


def batch_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one batch's dropout masks: a function of (seed, step, rank)
    only, so a resumed run and the backprop twin draw the same masks."""
    return seeding.dropout_generator(seed, step, rank, device)
