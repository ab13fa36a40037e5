"""InterruptCheckpoint: Ctrl-C or SIGTERM saves the run where it stands.

On a KeyboardInterrupt during training, or a SIGTERM (how clusters and schedulers stop
a job), writes `interrupted.ckpt` beside the run's other checkpoints (exact mid-epoch
resume: `--ckpt_path .../interrupted.ckpt`). Never on any other exception: a diverged
or crashed run keeps only its good checkpoints. `train.py` adds it to every run and
exits with code 130 (Ctrl-C) or 143 (SIGTERM).

SIGTERM: Lightning's own handler broadcasts from inside the signal handler, where under
DDP the broadcast can pair with another collective and hang, and each rank then checks
its own flag, so ranks can stop at different batches. Here the handler only records the
signal; at the end of every training (and test) batch the ranks agree (one all-reduce
of the flag: any rank signalled stops them all) and all raise Lightning's
`SIGTERMException` at the same batch: the state a mid-epoch checkpoint saves. (Lightning's
own DDP launcher watches its workers and kills the run when one exits non-zero: a worker
stopping with 143 is no crash, so that watcher is retired before they stop; rank zero then
waits for them, see `wait_for_workers`.)
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class InterruptCheckpoint(L.Callback):
    def __init__(self) -> None:
        self.path: Optional[Path] = None
        self.sigterm = False

    # SIGTERM: recorded when it arrives, acted on between batches by every rank at once
    def _take_sigterm(self) -> None:
        """Replace Lightning's handler (registered just before the stage runs; its teardown restores the previous one)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._record_sigterm)

    def _record_sigterm(self, signum, frame) -> None:
        self.sigterm = True

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._take_sigterm()

    def on_train_start(self, trainer, pl_module) -> None:
        self._take_sigterm()

    def on_test_start(self, trainer, pl_module) -> None:
        self._take_sigterm()

    def _stop_if_terminated(self, trainer) -> None:
        stop = self.sigterm
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([int(stop)], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            raise SIGTERMException()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_if_terminated(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop_if_terminated(trainer)

    # the checkpoint
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            retire_worker_watcher()  # every rank stops by itself
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.training:
            return
        self.path = checkpoint_folder(trainer) / "interrupted.ckpt"
        trainer.save_checkpoint(self.path)  # every rank takes part; rank zero writes


def retire_worker_watcher() -> None:
    """Lightning's launcher (rank zero) checks its workers every 5 s and kills everything when one
    exits non-zero (lightning.fabric.strategies.launchers.subprocess_script._ChildProcessObserver):
    after a SIGTERM every rank stops by itself, with 143."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer":
            thread._run = lambda: True  # its next check ends it


def wait_for_workers(trainer, timeout: float = 60.0) -> None:
    """Rank zero, once every rank stopped: wait for the workers Lightning's launcher started,
    so that none is left when train.py returns (killed after `timeout` seconds)."""
    for proc in getattr(trainer.strategy.launcher, "procs", None) or []:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def checkpoint_folder(trainer) -> Path:
    """Where the run's checkpoints go (the first ModelCheckpoint's folder), absolute."""
    folder = next((Path(cb.dirpath) for cb in trainer.checkpoint_callbacks
                   if isinstance(cb, ModelCheckpoint) and cb.dirpath), None)
    if folder is None:
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
    return folder.absolute()
