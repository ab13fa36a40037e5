"""SettleCheck: is inference finished before the weights move? (the seed's failure 6a)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
import matplotlib.pyplot as plt
import torch

from callbacks._common import ProbeBatch, is_pcn, log_figure, log_scalars, warn
from pcn_lightning.inference import relative_drop, settle


@dataclass
class SettleReport:
    rel_drop: float  # relative drop of the total energy over the last `fraction` of the steps
    settled: bool
    first: float  # energy per sample before inference
    last: float  # energy per sample after inference
    steps: int
    worst_drop: float = 0.0  # the largest relative drop of any single layer
    worst_layer: int = 0
    diverging: bool = False  # the energy rose over the last steps, or is not finite
    update_cosine: float = float("nan")  # the least cosine between a term's update after T and after 2T steps
    update_term: int = 0

    def message(self, tol: float, T_infer: int, eta_infer: float, names=None) -> str:
        layer = names[self.worst_layer] if names else f"term {self.worst_layer}"
        if self.diverging:
            return (
                f"inference is diverging: the energy went from {self.first:.4g} to {self.last:.4g} per sample "
                f"over the {self.steps} inference steps (over the last 10% it changed by {-self.rel_drop:+.2%}); "
                f"gradient descent on the energy must lower it. Lower eta_infer (now {eta_infer})."
            )
        update = ""
        if self.update_cosine == self.update_cosine:  # measured
            term = names[self.update_term] if names else f"term {self.update_term}"
            update = (f"; settling as long again turns the weight update of {term} by cosine "
                      f"{self.update_cosine:.3f}")
        return (
            f"inference has not settled: over the last 10% of the {self.steps} inference steps the "
            f"energy of {layer} still fell {self.worst_drop:.2%} (the total {self.rel_drop:.2%}; "
            f"tolerance {tol:.2%}; total {self.first:.4g} -> {self.last:.4g} per sample){update}. The weights "
            f"are learning from an unfinished thought: raise T_infer (now {T_infer}) or eta_infer "
            f"(now {eta_infer})."
        )


def settle_report(trace: torch.Tensor, tol: float, batch_size: int = 1, fraction: float = 0.1) -> SettleReport:
    """Judge one settle from its per-layer energy trace of shape (steps + 1, n_terms).

    Settled means every layer's energy (not only the total) fell by less than `tol`
    over the last `fraction` of the steps: a large layer that plateaus early (the
    3072-d input) must not hide the layers above it that are still descending.
    A total that rose (over the last steps, or from start to end) or is not finite
    is diverging, never settled.
    """
    t = trace.double()
    total = t.sum(1)
    first, last = total[0].item() / batch_size, total[-1].item() / batch_size
    if not torch.isfinite(t).all():
        return SettleReport(float("nan"), False, first, last, total.numel() - 1, float("nan"), 0, diverging=True)
    drop = relative_drop(total, fraction)
    drops = [relative_drop(t[:, i], fraction) for i in range(t.shape[1])]
    worst = max(range(len(drops)), key=drops.__getitem__)
    diverging = drop < -tol or total[-1] > total[0]  # the total rose: the step is too large
    return SettleReport(drop, max(drops) < tol and not diverging, first, last, total.numel() - 1, drops[worst], worst,
                        diverging)


def update_cosines(net, errors_a, errors_b, learned=None) -> list[float]:
    """Cosine between each term's weight update (dE/dtheta, all its parameters) at two
    states (1.0 for terms whose weights do not learn from this settle)."""
    out = []
    for k, (t, a, b) in enumerate(zip(net.terms, errors_a, errors_b)):
        if a is None or b is None or (learned is not None and k not in learned):
            out.append(1.0)
            continue
        ga = torch.cat([g.reshape(-1) for g in t.weight_grads(a)]).double()
        gb = torch.cat([g.reshape(-1) for g in t.weight_grads(b)]).double()
        denom = (ga.norm() * gb.norm()).item()
        out.append((ga @ gb).item() / denom if denom > 0 else 1.0)
    return out


def backprop_cosines(pl_module, x, y, errors) -> dict:
    """{term name: cosine between its update at the settled errors (all its parameters)
    and backprop's gradient of the twin's loss on the same batch and weights}: 1 is
    backprop's direction (the label's error carried without distortion), well below 1 is
    inference reshaping the errors (PC proper). Empty where the module has no twin's gradient."""
    if not hasattr(pl_module, "backprop_gradients"):
        return {}
    bp = pl_module.backprop_gradients(x, y)
    out = {}
    for k, (t, e) in enumerate(zip(pl_module.net.terms, errors)):
        if e is None or k not in set(pl_module.terms_learned_from_settle()):
            continue
        params = list(t.map.parameters())
        if not all(p in bp for p in params):
            continue
        pc = torch.cat([g.reshape(-1) for g in t.weight_grads(e)]).double()
        ref = torch.cat([bp[p].reshape(-1) for p in params]).double()
        denom = (pc.norm() * ref.norm()).item()
        if denom > 0:
            out[t.name] = (pc @ ref).item() / denom
    return out


def displacements(pl_module, x, xs) -> dict:
    """{latent node: ||x_settled - x_feedforward|| / ||x_feedforward||}: how far inference
    moved each latent from one prediction sweep (near 0: a small nudge, backprop's regime)."""
    if not hasattr(pl_module, "feedforward_state") or getattr(pl_module.inference, "latent_init", "") != "feedforward":
        return {}
    ff = pl_module.feedforward_state(x)
    net = pl_module.net
    return {net.nodes[j].name: ((xs[j] - ff[j]).norm() / ff[j].norm().clamp_min(1e-30)).item()
            for j in range(len(net.nodes)) if net.nodes[j].role == "latent" and ff[j] is not None}


def regime(min_cosine: float) -> str:
    return "approximately backprop" if min_cosine >= BACKPROP_COSINE else "PC proper"


BACKPROP_COSINE = 0.99  # every term's update this close to backprop's direction: backprop's regime


def settle_figure(trace: torch.Tensor, names: list[str], batch_size: int, title: str):
    t = trace.double().cpu() / batch_size
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    steps = range(t.shape[0])
    ax.plot(steps, t.sum(1).clamp_min(1e-12), "k-", lw=2, label="total")
    for i, name in enumerate(names):
        ax.plot(steps, t[:, i].clamp_min(1e-12), lw=1, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("inference step")
    ax.set_ylabel("energy per sample")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class SettleCheck(L.Callback):
    """Every `every_n_steps` training steps, settle a fixed probe batch (label clamped,
    as in training) recording the energy at every inference step, and check that it
    has converged: the relative energy drop of every term over the last 10 % of steps
    is below `tol`; or, where some term still falls, that settling as long again
    leaves every term's weight update where it was (cosine >= 1 - tol): a small
    term still drifting that does not change what is learned is not a failure.
    An energy that rises or is not finite is diverging (never settled).

    Logs (global rank zero): `settle/rel_drop` (total), `settle/rel_drop_worst_layer`,
    `settle/update_cosine` (when measured), `settle/diverging`,
    `settle/settled` (1 or 0), the regime: `settle/bp_cosine_{term}` and `settle/bp_cosine_min`
    (each term's update against backprop's gradient on the probe, by the twin's autograd:
    >= 0.99 is backprop's regime, below it PC proper) and `settle/displacement_{latent}` and
    `settle/displacement_max` (how far inference moved the latents from the feedforward state),
    `settle/energy_first`, `settle/energy_last`, `settle/energy_{layer}` and the figure
    `settle/energy_curve` (log scale, total and per layer). Warns when not settled.
    """

    def __init__(self, every_n_steps: int = 200, tol: float = 0.01, probe_size: int = 256, warn_once: bool = False) -> None:
        self.every_n_steps = every_n_steps
        self.tol = tol
        self.probe = ProbeBatch(probe_size)
        self.warn_once = warn_once
        self.warned = False
        self.regime_told = False
        self.reports: list[SettleReport] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.probe.capture(batch)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not is_pcn(pl_module):
            return
        timing = getattr(pl_module, "timing", None)
        if timing is not None and not timing.settles:
            if not self.warned:  # learning reads each error as one sweep passes: no settled state to check
                self.warned = True
                rank_zero_info(f"SettleCheck: weight_errors {timing.name!r} learns from one sweep by design "
                               "(backprop's gradient at eta_infer 1); there is no settle to check")
            return
        if (step - 1) % self.every_n_steps != 0:  # after the 1st, (N+1)th, ... step
            return
        xs, result = self.probe.settle(pl_module)
        B = self.probe.x.shape[0]
        report = settle_report(result.trace, self.tol, B)
        if not report.settled and not report.diverging:
            # does more inference change what the weights learn? settle as long again
            net = pl_module.net
            longer = [x.clone() for x in xs]
            free = [n.role == "latent" for n in net.nodes]
            with torch.no_grad():
                more = settle(net, longer, free, pl_module.inference)
                cos = update_cosines(net, result.errors, more.errors, set(pl_module.terms_learned_from_settle()))
            report.update_term = min(range(len(cos)), key=cos.__getitem__)
            report.update_cosine = cos[report.update_term]
            report.settled = report.update_cosine >= 1 - self.tol
        self.reports.append(report)
        names = pl_module.net.term_names
        final = result.trace[-1] / B
        metrics = {
            "settle/diverging": float(report.diverging),
            "settle/rel_drop": report.rel_drop,
            "settle/rel_drop_worst_layer": report.worst_drop,
            "settle/settled": float(report.settled),
            "settle/energy_first": report.first,
            "settle/energy_last": report.last,
        }
        if report.update_cosine == report.update_cosine:  # measured (only where some term still fell)
            metrics["settle/update_cosine"] = report.update_cosine
        metrics.update({f"settle/energy_{n}": v for n, v in zip(names, final.tolist())})
        x, y = self.probe.x.to(pl_module.device), self.probe.y.to(pl_module.device)
        cosines = backprop_cosines(pl_module, x, y, result.errors)
        moved = displacements(pl_module, x, xs)
        metrics.update({f"settle/bp_cosine_{n}": v for n, v in cosines.items()})
        metrics.update({f"settle/displacement_{n}": v for n, v in moved.items()})
        if cosines:
            metrics["settle/bp_cosine_min"] = min(cosines.values())
        if moved:
            metrics["settle/displacement_max"] = max(moved.values())
        if cosines and not self.regime_told:
            self.regime_told = True
            worst = min(cosines, key=cosines.get)
            rank_zero_info(
                f"SettleCheck: regime at step {step}: {regime(cosines[worst])} (the updates' least cosine to "
                f"backprop's gradient {cosines[worst]:.3f}, {worst}; >= {BACKPROP_COSINE} is backprop's regime; the "
                f"latents moved up to {max(moved.values()) if moved else float('nan'):.2g} of their norm from the "
                "feedforward state)")
        log_scalars(trainer, metrics)
        log_figure(trainer, "settle/energy_curve", settle_figure(
            result.trace, names, B, f"settle at step {step}: last-10% drop {report.rel_drop:.2%}"))
        if not report.settled and not (self.warn_once and self.warned):
            self.warned = True
            warn(report.message(self.tol, pl_module.inference.T_infer, pl_module.inference.eta_infer, names))
