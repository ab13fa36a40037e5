"""ReplicaCheck: are the data-parallel replicas still identical?

With no backward pass, DDP synchronizes nothing by itself; `PCNModule` all-reduces
its hand-set gradients. This callback proves it did: it gathers a float64 checksum
of every rank's parameters and reports the largest difference. The gather is a
collective, so it runs on every rank (never inside rank-zero-only code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
import torch

from callbacks._common import log_scalars, warn


def parameter_checksum(module: torch.nn.Module) -> torch.Tensor:
    """(sum, sum of squares, weighted sum) of all parameters, in float64."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device) / flat.numel()
    return torch.stack([flat.sum(), flat.pow(2).sum(), (flat * weights).sum()])


class ReplicaCheck(L.Callback):
    """Every `every_n_steps` training steps and at the end of fit, compare the
    parameters of all ranks; logs `ddp/replica_max_diff` and warns when it exceeds
    `tol`. With `dump_dir`, each rank saves its final parameters to
    `dump_dir/params_rank{r}.pt`."""

    def __init__(self, every_n_steps: int = 500, tol: float = 1e-6, dump_dir: Optional[str] = None) -> None:
        self.every_n_steps = every_n_steps
        self.tol = tol
        self.dump_dir = dump_dir
        self.max_diff = 0.0

    def _check(self, trainer, pl_module) -> float:
        local = parameter_checksum(pl_module)
        gathered = trainer.strategy.all_gather(local)  # (world, 3), or (3,) on one device
        gathered = gathered.reshape(-1, 3)
        diff = (gathered - gathered[0]).abs().max() / gathered[0].abs().clamp_min(1e-30).max()
        self.max_diff = max(self.max_diff, diff.item())
        self._report(trainer, diff.item())
        return diff.item()

    @rank_zero_only
    def _report(self, trainer, diff: float) -> None:
        log_scalars(trainer, {"ddp/replica_max_diff": diff})
        if diff > self.tol:
            warn(f"data-parallel replicas differ by {diff:.3g} (relative) at step "
                 f"{trainer.global_step}: the gradients were not all-reduced")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1 and trainer.global_step % self.every_n_steps == 0:
            self._check(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module)
        if self.dump_dir is not None:
            path = Path(self.dump_dir)
            path.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()}
            torch.save(state, path / f"params_rank{trainer.global_rank}.pt")
