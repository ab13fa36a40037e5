"""EpochTimer: wall time of every training epoch (the number a speed comparison
between a PCN and its backprop twin needs)."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import log_scalars


class EpochTimer(L.Callback):
    """Logs `time/epoch_s`: seconds from the first training batch of an epoch to the
    end of its last (validation excluded; device work finished: CUDA is synchronized),
    and keeps them in `self.epoch_seconds`."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = None

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        if self._start is not None:
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self._report(trainer)

    @rank_zero_only
    def _report(self, trainer) -> None:
        log_scalars(trainer, {"time/epoch_s": self.epoch_seconds[-1]})
