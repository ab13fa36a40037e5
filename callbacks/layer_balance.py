"""LayerBalance: is one layer holding most of the energy? (the seed's failure 6b)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

import numpy as np

from callbacks._common import is_pcn, log_figure, log_norm, log_scalars, plt, row_ticks, warn


@dataclass
class BalanceReport:
    shares: list[float]  # of the energy (per value, when sizes were given)
    names: list[str]
    threshold: float
    exempt: tuple = ()  # terms never judged dominant (where the label's error enters)
    per_value: bool = False

    @property
    def worst(self) -> int:
        judged = [i for i, n in enumerate(self.names) if n not in self.exempt] or list(range(len(self.names)))
        return max(judged, key=self.shares.__getitem__)

    @property
    def dominated(self) -> bool:
        return len(self.shares) > 1 and self.shares[self.worst] > self.threshold

    def message(self) -> str:
        i = self.worst
        others = ", ".join(f"{n} {s:.1%}" for j, (n, s) in enumerate(zip(self.names, self.shares)) if j != i)
        what = "of the energy per predicted value" if self.per_value else "of the energy"
        return (
            f"{self.names[i]} holds {self.shares[i]:.1%} {what} (threshold {self.threshold:.0%}; "
            f"{others}). Its errors dominate inference and the weight updates: check its activation's "
            "range (see range/out_of_range_*), normalize its scale, or give it a smaller per-layer "
            "learning rate (eta_learn as a list) or precision."
        )


def balance_report(layer_energies: torch.Tensor, names: list[str], threshold: float = 0.5,
                   sizes: list[int] | None = None, exempt: tuple = ()) -> BalanceReport:
    """Each term's share of the energy; with `sizes` (values each term predicts), of the
    energy per value, so that a 784-d layer does not dominate by its size alone (the
    dimensionality the seed points out in 6b)."""
    e = layer_energies.double().clamp_min(0)
    if sizes is not None:
        e = e / torch.tensor(sizes, dtype=e.dtype, device=e.device)
    shares = (e / e.sum().clamp_min(1e-300)).tolist()
    return BalanceReport(shares, names, threshold, tuple(exempt), sizes is not None)


def shares_figure(shares: np.ndarray, names: list[str]):
    """Terms x epochs: each term's share of the training energy, log colour scale."""
    height = min(14.0, 0.4 * len(names) + 2.5) if len(names) <= 24 else min(14.0, 0.16 * len(names) + 3)
    fig, ax = plt.subplots(figsize=(6, height), dpi=80)
    data = np.clip(shares, 1e-12, None)
    im = ax.imshow(data, aspect="auto", cmap="inferno", interpolation="nearest", norm=log_norm(data))
    row_ticks(ax, names)
    ax.set_xticks(range(shares.shape[1]), [str(e) for e in range(shares.shape[1])])
    ax.set_xlabel("epoch")
    ax.set_ylabel("term (the layer it predicts)")
    ax.set_title("share of the training energy (log scale)", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


class LayerBalance(L.Callback):
    """Share of the training energy held by each term, averaged over each epoch from
    the energies every training step already computed.

    Logs (global rank zero) per epoch: the image `balance/shares` (terms x epochs,
    log colour scale, readable at 64+ rows), `balance/share_{term}` (of the energy),
    `balance/share_per_value_{term}` (of the energy per predicted value) and
    `balance/max_share`. Warns when one term's share per value exceeds `threshold`,
    the term predicting the clamped label excepted: in training that is where the
    supervised error enters, by design (its precision sets how much), so its
    holding most of the energy is not the seed's failure 6b.
    """

    def __init__(self, threshold: float = 0.8, warn_every_epoch: bool = False) -> None:
        self.threshold = threshold
        self.warn_every_epoch = warn_every_epoch
        self.warned = False
        self._sum = None
        self.reports: list[BalanceReport] = []
        self.history: list[list[float]] = []  # shares of the energy, one row per epoch

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
        net = pl_module.net
        names = net.term_names
        sizes = [net.nodes[t.target].size for t in net.terms]
        label = tuple(t.name for t in net.terms if t.target == net.label)
        report = balance_report(total, names, self.threshold, sizes, exempt=label)
        self.reports.append(report)
        shares = balance_report(total, names).shares
        self.history.append(shares)
        metrics = {f"balance/share_{n}": s for n, s in zip(names, shares)}
        metrics.update({f"balance/share_per_value_{n}": s for n, s in zip(names, report.shares)})
        metrics["balance/max_share"] = report.shares[report.worst]
        log_scalars(trainer, metrics)
        log_figure(trainer, "balance/shares", shares_figure(np.array(self.history).T, names))
        if report.dominated and (self.warn_every_epoch or not self.warned):
            self.warned = True
            warn(report.message())
