"""Evaluation metrics shared by the PCN and its twin: top-1, top-3 and (ten classes or
more: CIFAR's convention) top-5 accuracy (torchmetrics, micro), and a PCN's mean settled energy."""

from __future__ import annotations

from typing import Optional

import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


def classification_metrics(num_classes: int, energy: bool) -> torch.nn.ModuleDict:
    metrics = torch.nn.ModuleDict()
    for stage in ("val", "test"):
        metrics[f"{stage}_acc_top1"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        if num_classes >= 3:
            metrics[f"{stage}_acc_top3"] = MulticlassAccuracy(num_classes, top_k=3, average="micro")
        if num_classes >= 10:
            metrics[f"{stage}_acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        if energy:
            metrics[f"{stage}_energy"] = MeanMetric()
    return metrics


def log_metrics(module, stage: str, logits: torch.Tensor, y: torch.Tensor, energy: Optional[torch.Tensor] = None) -> None:
    """Update the stage's metrics and log them as `{stage}/acc_top1`, `.../acc_top3`, `.../acc_top5`, `.../energy`."""
    for name, metric in module.metrics.items():
        if name.startswith(stage):
            metric.update(energy) if name.endswith("energy") else metric.update(logits, y)
            module.log(f"{stage}/{name[len(stage) + 1:]}", metric, on_step=False, on_epoch=True,
                       prog_bar=name.endswith("top1"))
