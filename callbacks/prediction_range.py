"""PredictionRange: can each activation produce what it must predict? (the seed's failure 6c)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
import torch
import torch.nn.functional as F

from callbacks._common import is_pcn, log_scalars, warn


@dataclass
class RangeReport:
    layer: str
    activation: str
    share: float  # share of clamped values the activation cannot produce
    low: float
    high: float

    def message(self) -> str:
        rng = f"[{self.low:g}, {self.high:g}]".replace("inf]", "inf)")
        return (
            f"{self.layer}: {self.share:.1%} of the clamped values lie outside {rng}, the range "
            f"that its predicting activation {self.activation!r} can produce, so their error can "
            f"never reach zero. Use a linear activation for {self.layer} (e.g. activations: "
            f"[linear, ...]) or turn input normalization off (--data.normalize false)."
        )


def range_reports(pl_module, x: torch.Tensor, y: torch.Tensor) -> list[RangeReport]:
    """Share of out-of-range values for every term that predicts a clamped node
    (the data, the one-hot label)."""
    net = pl_module.net
    values = {net.data: x, net.label: F.one_hot(y, net.num_classes).to(x.dtype)}  # only values matter
    return [RangeReport(t.name, t.act.name, t.act.share_out_of_range(values[t.target]), t.act.low, t.act.high)
            for t in net.terms if t.target in values]


class PredictionRange(L.Callback):
    """Before the first weight update, measure the share of clamped values (pixels in
    the generative model, the one-hot label in the discriminative one) that the
    activation predicting them cannot produce: ReLU below 0, sigmoid outside (0, 1),
    tanh outside (-1, 1).

    Logs (global rank zero) `range/out_of_range_{layer}`; warns, naming the layer, the
    share and the fix, when the share exceeds `threshold`.
    """

    def __init__(self, threshold: float = 0.01) -> None:
        self.threshold = threshold
        self.done = False
        self.reports: list[RangeReport] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done or not is_pcn(pl_module):
            return
        self.done = True
        self._report(trainer, pl_module, batch)

    @rank_zero_only
    def _report(self, trainer, pl_module, batch) -> None:
        self.reports = range_reports(pl_module, *batch)
        log_scalars(trainer, {f"range/out_of_range_{r.layer}": r.share for r in self.reports})
        for r in self.reports:
            if r.share > self.threshold:
                warn(r.message())
