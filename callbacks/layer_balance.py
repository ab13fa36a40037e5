"""LayerBalance: is one layer holding most of the energy? (the seed's failure 6b)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import is_pcn, log_scalars, warn


@dataclass
class BalanceReport:
    shares: list[float]
    names: list[str]
    threshold: float

    @property
    def worst(self) -> int:
        return max(range(len(self.shares)), key=self.shares.__getitem__)

    @property
    def dominated(self) -> bool:
        return len(self.shares) > 1 and self.shares[self.worst] > self.threshold

    def message(self) -> str:
        i = self.worst
        others = ", ".join(f"{n} {s:.1%}" for j, (n, s) in enumerate(zip(self.names, self.shares)) if j != i)
        return (
            f"{self.names[i]} holds {self.shares[i]:.1%} of the energy (threshold {self.threshold:.0%}; "
            f"{others}). Its errors dominate inference and the weight updates: give it a smaller "
            "per-layer learning rate (eta_learn as a list), check its activation's range, or "
            "normalize its scale."
        )


def balance_report(layer_energies: torch.Tensor, names: list[str], threshold: float = 0.5) -> BalanceReport:
    e = layer_energies.double().clamp_min(0)
    shares = (e / e.sum().clamp_min(1e-300)).tolist()
    return BalanceReport(shares, names, threshold)


class LayerBalance(L.Callback):
    """Share of the training energy held by each layer (the readout term included),
    averaged over each epoch from the energies every training step already computed.

    Logs (global rank zero): `balance/share_{layer}` and `balance/max_share` per
    epoch; warns when one layer's share exceeds `threshold`.
    """

    def __init__(self, threshold: float = 0.5, warn_every_epoch: bool = False) -> None:
        self.threshold = threshold
        self.warn_every_epoch = warn_every_epoch
        self.warned = False
        self._sum = None
        self.reports: list[BalanceReport] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not is_pcn(pl_module) or pl_module.last_term_energies is None:
            return
        e = pl_module.last_term_energies.detach()
        self._sum = e.clone() if self._sum is None else self._sum + e

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._sum is None:
            return
        total, self._sum = self._sum, None
        self._report(trainer, pl_module, total)

    @rank_zero_only
    def _report(self, trainer, pl_module, total) -> None:
        report = balance_report(total, pl_module.net.term_names, self.threshold)
        self.reports.append(report)
        metrics = {f"balance/share_{n}": s for n, s in zip(report.names, report.shares)}
        metrics["balance/max_share"] = max(report.shares)
        log_scalars(trainer, metrics)
        if report.dominated and (self.warn_every_epoch or not self.warned):
            self.warned = True
            warn(report.message())
