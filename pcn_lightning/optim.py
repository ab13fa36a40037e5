"""The optimizer and schedule for a PCN's hand-set gradients.

One parameter group per term (its learning rate from eta_learn), one for the
amortizer (eta_amort) and one for the learned precisions (eta_precision).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from pcn_lightning.network import PCNetwork
from pcn_lightning.settings import Learning


def attached_trainer(module):
    """The module's Trainer, or None when it is used on its own (public API only)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def make_optimizer(net: PCNetwork, rules: Sequence, rates: Sequence[float], learning: Learning,
                   max_epochs: Optional[int]):
    groups = [{"params": list(t.map.parameters()), "lr": lr} for t, lr in zip(net.terms, rates)]
    groups = [g for g in groups if g["params"]]
    if len(net.amortizer):
        groups.append({"params": [p for t in net.amortizer for p in t.map.parameters()], "lr": learning.eta_amort})
    if learning.learn_precision:
        groups.append({"params": [t.log_precision for t in net.terms], "lr": learning.eta_precision})
    if learning.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=rates[0], momentum=learning.momentum, weight_decay=learning.weight_decay)
    else:
        # the fused kernel where the device has one (unfused Adam took ~9 % of a small model's step)
        params = [p for g in groups for p in g["params"]]
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        cls = torch.optim.Adam if learning.optimizer == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=rates[0], weight_decay=learning.weight_decay, fused=fused)
    if learning.lr_scheduler is None:
        return opt
    if learning.lr_scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs or 1))
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=learning.lr_step_epochs, gamma=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
