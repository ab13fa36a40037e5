"""ClassSamples: what the generative model imagines for each class ("every classifier
is a generator")."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
import torch
from torchvision.utils import make_grid

from callbacks._common import ProbeBatch, is_pcn, tensorboard


def to_images(x: torch.Tensor, datamodule) -> torch.Tensor:
    """Flat samples -> (N, C, H, W) in [0, 1], undoing the data's normalization."""
    channels = len(getattr(datamodule, "mean", (1,)))
    side = int(math.isqrt(x.shape[1] // channels))
    img = x.reshape(x.shape[0], channels, side, side)
    if datamodule is not None and datamodule.hparams.get("normalize"):
        mean = torch.tensor(datamodule.mean, dtype=img.dtype, device=img.device).view(1, -1, 1, 1)
        std = torch.tensor(datamodule.std, dtype=img.dtype, device=img.device).view(1, -1, 1, 1)
        img = img * std + mean
    return img.clamp(0, 1)


class ClassSamples(L.Callback):
    """At every epoch end (global rank zero), generate `per_class` samples of every
    class with `PCNModule.generate` and log one grid (a row per class) as the image
    `generation/samples`. The top latent of each class is its prototype: the mean
    settled top latent of that class in a fixed probe batch of `probe_size`
    training samples (the label is used here, as in training, never in
    evaluation). Generative models only."""

    def __init__(self, per_class: int = 8, noise_std: float = 0.3, classes: Optional[Sequence[int]] = None,
                 seed: int = 0, probe_size: int = 1024) -> None:
        self.per_class = per_class
        self.noise_std = noise_std
        self.classes = classes
        self.seed = seed
        self.probe = ProbeBatch(probe_size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.probe.capture(batch)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not is_pcn(pl_module) or not pl_module.net.predicts_data:
            return
        writer = tensorboard(trainer)
        if writer is None:
            return
        classes = torch.tensor(self.classes if self.classes is not None else range(pl_module.net.num_classes))
        labels = classes.repeat_interleave(self.per_class)
        protos = None
        if self.probe.x is not None:
            protos = pl_module.class_prototypes(self.probe.x.to(pl_module.device), self.probe.y.to(pl_module.device))
        x = pl_module.generate(labels, self.noise_std, torch.Generator().manual_seed(self.seed), protos)
        grid = make_grid(to_images(x.cpu(), trainer.datamodule), nrow=self.per_class, padding=1, pad_value=1.0)
        writer.add_image("generation/samples", grid, global_step=trainer.global_step)
