"""A local-learning step as two functions, shared by every PC model here.

    pairs = local_gradients(rules, settled)        # each rule's dE/dtheta at the settled state
    apply_gradients(optimizer, pairs, count)       # p.grad = mean, over the batch and the ranks; step

`local_gradients` is where the learning happens (local rules, no autograd); the
sums it returns are over the batch (or, for the language model, over the batch's
characters). `apply_gradients` hands them to the optimizer exactly as autograd would
have: divided by `count`, averaged over DDP ranks in one flat all-reduce, clipped,
stepped. `ModelBase` is what every LightningModule here shares around them: the
optimizer and its schedule.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from pcn_lightning.optim import attached_trainer, make_optimizer, stretch_cosine

Tensor = torch.Tensor
Gradients = list[tuple[nn.Parameter, Tensor]]


def local_gradients(rules: Sequence, settled) -> Gradients:
    """(parameter, dE/dparameter summed over the batch) for every rule's parameters,
    each from its local rule on the settled batch (`rules.SettledBatch`)."""
    return [(p, g) for r in rules for p, g in zip(r.parameters(), r.gradients(settled))]


def set_gradients(pairs: Gradients, count: int) -> None:
    """p.grad = g / count, averaged over DDP ranks in one flat all-reduce (the hand-set
    gradients are not autograd's, so nothing else reduces them)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flat = torch.cat([g.reshape(-1) for _, g in pairs])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= dist.get_world_size() * count
        offset = 0
        for p, _ in pairs:
            p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return
    for p, g in pairs:
        p.grad = g.div_(count)  # made for this step: scaled in place


def apply_gradients(optimizer, pairs: Gradients, count: int, clip_norm: Optional[float] = None,
                    clip_params: Optional[Iterable[nn.Parameter]] = None) -> None:
    """One optimizer step on the mean gradients (`set_gradients`); with `clip_norm`, the
    gradients of `clip_params` (all of `pairs` by default) clipped to that total norm first."""
    set_gradients(pairs, count)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(clip_params) if clip_params is not None else [p for p, _ in pairs], clip_norm)
    optimizer.step()


class ModelBase(L.LightningModule):
    """What every model here shares: `self.net`, `self.rates` and `self.learning` make the
    optimizer (one group per term, `optim.make_optimizer`) and its schedule; a resumed run
    extended past its cosine schedule is stretched (`optim.stretch_cosine`). Models that
    step their own optimizer (manual optimization) step the schedule with
    `step_lr_schedule` at the end of every epoch."""

    def optimizer_rules(self) -> Sequence:
        """The rules whose extra parameters (learned precisions) get their own group."""
        return []

    def configure_optimizers(self):
        trainer = attached_trainer(self)
        max_epochs = trainer.max_epochs if trainer is not None else None
        return make_optimizer(self.net, self.optimizer_rules(), self.rates, self.learning, max_epochs)

    def on_train_start(self) -> None:
        stretch_cosine(self.trainer)  # a resumed run extended past its schedule

    def step_lr_schedule(self) -> None:
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
