"""AttentionMap: where a transformer's attention looks, on one probe sentence, as an image."""

from __future__ import annotations

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import log_figure, tensorboard


def attention_figure(weights: np.ndarray, text: str, title: str):
    """One head's attention (T, T): row t is where position t looks (its past only),
    the characters along both axes."""
    T = weights.shape[0]
    size = min(12.0, 2.0 + 0.16 * T)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    im = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-6), interpolation="nearest")
    labels = [repr(c)[1:-1] if c.strip() else "␣" if c == " " else "⏎" for c in text[-T:]]
    ax.set_xticks(range(T), labels, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_xlabel("attended position (the past)")
    ax.set_ylabel("position predicting its next character")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


class AttentionMap(L.Callback):
    """At every validation end (global rank zero), the attention probabilities of head
    `head` of transformer block `block` (0 = the first; -1 = the last) on `probe`, logged
    as the image `attention/block{b}_head{h}`. Models with `attention_maps(text)`."""

    def __init__(self, probe: str = "ROMEO:\nWhat light through yonder window breaks?", block: int = -1,
                 head: int = 0) -> None:
        self.probe, self.block, self.head = probe, block, head

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.sanity_checking or tensorboard(trainer) is None or not hasattr(pl_module, "attention_maps")
                or not pl_module.vocab):
            return
        # the probe's characters the corpus has (its first character when it has none of them)
        text = "".join(c for c in self.probe if c in pl_module.vocab)[-pl_module.context:] or pl_module.vocab[0]
        maps = pl_module.attention_maps(text)
        if not maps:
            return
        b = self.block % len(maps)
        h = self.head % maps[b].shape[0]
        fig = attention_figure(maps[b][h].float().cpu().numpy(), text,
                               f"block {b}, head {h}, step {trainer.global_step}")
        log_figure(trainer, f"attention/block{b}_head{h}", fig)
