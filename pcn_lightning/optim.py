"""The optimizer and schedule for a PCN's hand-set gradients.

One parameter group per term (its learning rate from eta_learn), one for the
amortizer (eta_amort) and one for the learned precisions (eta_precision).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from pcn_lightning.errors import ConfigError
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
    precisions = [p for r in rules if getattr(r, "learns_precision", False) for p in r.parameters()]
    if precisions:
        groups.append({"params": precisions, "lr": learning.eta_precision})
    if learning.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=rates[0], momentum=learning.momentum, weight_decay=learning.weight_decay)
    else:
        # the fused kernel where the device has one (unfused Adam took ~9 % of a small model's step)
        params = [p for g in groups for p in g["params"]]
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        cls = torch.optim.Adam if learning.optimizer == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=rates[0], weight_decay=learning.weight_decay, eps=learning.adam_eps, betas=learning.adam_betas,
                  fused=fused)
    # the cached Lipschitz bounds of normalized steps must follow the weights; fused Adam's
    # in-place update leaves the tensors' version counters alone, so say it after every step
    maps = [t.map for t in net.terms] + [t.map for t in net.amortizer]
    opt.register_step_post_hook(lambda *_: [m.forget_lipschitz() for m in maps])
    if learning.lr_scheduler is None:
        return opt
    if learning.lr_scheduler == "cosine":
        if max_epochs is None or max_epochs < 1:
            raise ConfigError("lr_scheduler 'cosine' anneals over --trainer.max_epochs: set it (a positive number)")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=learning.lr_step_epochs, gamma=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def stretch_cosine(trainer) -> None:
    """A run resumed with a larger --trainer.max_epochs: the cosine schedule, made for
    the old length (where it had reached lr 0), is stretched over the new one from
    where it stands, and the learning rates set to that curve, with a message. Never
    trains silently at lr 0."""
    import math

    from lightning.pytorch.utilities import rank_zero_warn

    max_epochs = trainer.max_epochs
    for cfg in trainer.lr_scheduler_configs:
        sched = cfg.scheduler
        if not isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) or sched.T_max == max_epochs:
            continue
        if max_epochs is None or max_epochs < 1:
            raise ConfigError("lr_scheduler 'cosine' anneals over --trainer.max_epochs: set it (a positive number)")
        old, e = sched.T_max, sched.last_epoch
        sched.T_max = max_epochs
        for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
            group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * e / max_epochs)) / 2
        sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        rank_zero_warn(
            f"the cosine schedule was made for {old} epochs; this run goes to {max_epochs}: it now anneals over "
            f"{max_epochs} epochs from epoch {e} (learning rate {sched._last_lr[0]:.3g} for the first group)"
        )
