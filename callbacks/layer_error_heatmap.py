"""LayerErrorHeatmap: per-layer prediction error per epoch (the seed's figure in 6b)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
import matplotlib.pyplot as plt
import numpy as np
import torch

from callbacks._common import ProbeBatch, is_pcn, log_figure, log_norm, log_scalars, row_ticks


def heatmap_figure(total: np.ndarray, per_element: np.ndarray, names: list[str], epochs: list[int]):
    """Two heatmaps, layers x epochs: total ||eps||^2 and per-element mean, log colour scale."""
    height = min(14.0, 0.5 * len(names) + 2.5) if len(names) <= 24 else min(14.0, 0.16 * len(names) + 3)
    fig, axes = plt.subplots(1, 2, figsize=(10, height), dpi=80)
    for ax, data, title in (
        (axes[0], total, "total ||eps(l)||^2 per sample"),
        (axes[1], per_element, "per-element mean eps(l)^2"),
    ):
        data = np.clip(data, 1e-30, None)
        im = ax.imshow(data, aspect="auto", cmap="inferno", interpolation="nearest", norm=log_norm(data))
        row_ticks(ax, names)
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_xlabel("epoch")
        ax.set_ylabel("term (the layer it predicts)")
        ax.set_title(title + " (log scale)", fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def curves_figure(trace: torch.Tensor, dims: list[int], names: list[str], epoch: int):
    """Per-layer per-element error against the inference step (at depth: a colour map
    from the input side to the label, and a colour bar instead of a legend)."""
    t = trace.double().cpu()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    many = len(names) > 12
    colours = plt.cm.viridis(np.linspace(0, 1, len(names))) if many else [None] * len(names)
    for i, (name, d) in enumerate(zip(names, dims)):
        ax.plot(range(t.shape[0]), (2 * t[:, i] / d).clamp_min(1e-12), label=name, color=colours[i],
                lw=0.8 if many else 1.5)
    ax.set_yscale("log")
    ax.set_xlabel("inference step")
    ax.set_ylabel("per-element mean eps^2")
    ax.set_title(f"error curve of each layer, epoch {epoch}")
    if many:
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, len(names) - 1))
        fig.colorbar(sm, ax=ax, label=f"term index ({names[0]} .. {names[-1]})")
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class LayerErrorHeatmap(L.Callback):
    """At the end of every training epoch, settle a fixed probe batch and record each
    layer's prediction error: total ||eps(l)||^2 per sample and its per-element mean
    (which removes the 3072-vs-10 dimensionality the seed points out).

    Logs (global rank zero): the image `diagnostics/layer_error_heatmap` (layers x
    epochs, both measures, colour bars), `diagnostics/layer_error_curves` (error vs
    inference step per layer), and scalars `layer_error/total_{layer}` and
    `layer_error/per_element_{layer}`.
    """

    def __init__(self, probe_size: int = 256) -> None:
        self.probe = ProbeBatch(probe_size)
        self.total: list[list[float]] = []
        self.per_element: list[list[float]] = []
        self.epochs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.probe.capture(batch)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not is_pcn(pl_module) or self.probe.x is None:
            return
        _, result = self.probe.settle(pl_module)
        B = self.probe.x.shape[0]
        names = pl_module.net.term_names
        dims = layer_dims(pl_module)
        final = (2 * result.trace[-1] / B).tolist()  # ||eps||^2 per sample
        self.total.append(final)
        self.per_element.append([v / d for v, d in zip(final, dims)])
        self.epochs.append(trainer.current_epoch)
        metrics = {f"layer_error/total_{n}": v for n, v in zip(names, final)}
        metrics.update({f"layer_error/per_element_{n}": v for n, v in zip(names, self.per_element[-1])})
        log_scalars(trainer, metrics)
        log_figure(trainer, "diagnostics/layer_error_heatmap", heatmap_figure(
            np.array(self.total).T, np.array(self.per_element).T, names, self.epochs))
        log_figure(trainer, "diagnostics/layer_error_curves", curves_figure(result.trace, dims, names, trainer.current_epoch))


def layer_dims(pl_module) -> list[int]:
    """Number of values each term predicts, in the order of the term names."""
    net = pl_module.net
    return [net.nodes[t.target].size for t in net.terms]
