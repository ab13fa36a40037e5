"""ReliabilityDiagram: is the network's confidence its accuracy? (at every validation)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import log_figure, log_scalars
from pcn_lightning.calibration import expected_calibration_error, reliability_figure


class ReliabilityDiagram(L.Callback):
    """Collects the validation predictions' class probabilities (the module's
    `class_probabilities(logits)`: for a PCN softmax(pi * prediction), pi the learned
    precision of its label-free prediction) and logs, on global rank zero, the image
    `calibration/reliability` (accuracy per confidence bin, 15 equal-width bins) and the
    scalar `val/ece` (top-1 expected calibration error)."""

    def __init__(self, bins: int = 15) -> None:
        self.bins = bins
        self._probs, self._labels = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None or not hasattr(pl_module, "class_probabilities"):
            return
        self._probs.append(pl_module.class_probabilities(outputs).detach().cpu())
        self._labels.append(batch[1].detach().cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._probs or trainer.sanity_checking:
            self._probs, self._labels = [], []
            return
        probs, labels = torch.cat(self._probs), torch.cat(self._labels)
        self._probs, self._labels = [], []
        self._report(trainer, probs, labels)

    @rank_zero_only
    def _report(self, trainer, probs, labels) -> None:
        log_scalars(trainer, {"val/ece": expected_calibration_error(probs, labels, self.bins)})
        log_figure(trainer, "calibration/reliability",
                   reliability_figure(probs, labels, self.bins, f"epoch {trainer.current_epoch}"))
