"""Helpers shared by the diagnostics callbacks (not a callback itself)."""

from __future__ import annotations

import warnings
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from pcn_lightning.protocol import Diagnosable  # noqa: E402


class PCNDiagnosticWarning(UserWarning):
    """A diagnostics callback found one of the failures it watches for."""


def warn(message: str) -> None:
    warnings.warn(message, PCNDiagnosticWarning, stacklevel=2)


def is_pcn(pl_module) -> bool:
    """True for modules with the diagnostics interface (not the backprop twin)."""
    return isinstance(pl_module, Diagnosable)


PROBE_SEED = 12345  # the probe's latents: the same every time it is settled


def tensorboard(trainer) -> Optional[object]:
    """The SummaryWriter of the first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_scalars(trainer, metrics: dict, step: Optional[int] = None) -> None:
    """Log scalars through every logger (callers run on global rank zero only)."""
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(trainer, tag: str, fig, step: Optional[int] = None) -> None:
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_figure(tag, fig, global_step=trainer.global_step if step is None else step, close=True)
    else:
        plt.close(fig)


def row_ticks(ax, names: list[str]) -> None:
    """Row labels that stay readable at depth: every row up to 24 rows, then every k-th."""
    step = max(1, int(np.ceil(len(names) / 24)))
    rows = list(range(0, len(names), step))
    if rows[-1] != len(names) - 1:
        rows.append(len(names) - 1)
    ax.set_yticks(rows, [names[i] for i in rows], fontsize=8 if len(names) > 12 else 10)


def log_norm(data: np.ndarray) -> LogNorm:
    """A log colour scale over the positive values (errors span orders of magnitude with depth)."""
    pos = data[np.isfinite(data) & (data > 0)]
    lo, hi = (pos.min(), pos.max()) if pos.size else (1e-12, 1.0)
    return LogNorm(vmin=lo, vmax=max(hi, lo * 10))



class ProbeBatch:
    """A fixed probe batch: the first `size` samples of the first training batch seen.

    Taken from a batch the trainer already drew, so that the callback never
    iterates a dataloader itself (which would move the sampler's random state).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.x: Optional[torch.Tensor] = None
        self.y: Optional[torch.Tensor] = None

    def capture(self, batch) -> None:
        if self.x is None:
            x, y = batch
            self.x = x[: self.size].detach().clone()
            self.y = y[: self.size].detach().clone()

    def settle(self, pl_module):
        """Settle the probe like a training step (label clamped), recording energies."""
        gen = torch.Generator().manual_seed(PROBE_SEED)
        return pl_module.settle_probe(self.x.to(pl_module.device), self.y.to(pl_module.device), gen)
