"""WeightStats: weight and update norms per layer, and weight histograms."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import log_scalars, tensorboard


class WeightStats(L.Callback):
    """Every `every_n_steps` training steps, log `weights/norm_{name}` and
    `weights/update_norm_{name}` (the norm of the last step's change to each
    weight matrix, and `weights/update_ratio_{name}` = update / weight norm); at every
    epoch end, histograms `weights/{name}` (global rank zero only)."""

    def __init__(self, every_n_steps: int = 50, histograms: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.histograms = histograms
        self._before = None

    @staticmethod
    def _named(pl_module):
        if hasattr(pl_module, "named_weights"):
            return pl_module.named_weights()
        return [(n.replace(".", "_"), p) for n, p in pl_module.named_parameters()]

    def _due(self, trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    @rank_zero_only
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._due(trainer):
            self._before = [p.detach().clone() for _, p in self._named(pl_module)]

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:
            return
        metrics = {}
        for (name, p), p0 in zip(self._named(pl_module), self._before):
            w, u = p.detach().norm().item(), (p.detach() - p0).norm().item()
            metrics[f"weights/norm_{name}"] = w
            metrics[f"weights/update_norm_{name}"] = u
            metrics[f"weights/update_ratio_{name}"] = u / max(w, 1e-30)
        self._before = None
        log_scalars(trainer, metrics)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        writer = tensorboard(trainer)
        if not self.histograms or writer is None:
            return
        for name, p in self._named(pl_module):
            writer.add_histogram(f"weights/{name}", p.detach().cpu(), global_step=trainer.global_step)
