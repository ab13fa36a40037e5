"""InterruptCheckpoint: Ctrl-C saves the run where it stands.

On a KeyboardInterrupt during fit, writes `interrupted.ckpt` beside the run's other
checkpoints (exact mid-epoch resume: `--ckpt_path .../interrupted.ckpt`). Never on
any other exception: a diverged or crashed run keeps only its good checkpoints.
`train.py` adds it to every run and exits with code 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class InterruptCheckpoint(L.Callback):
    def __init__(self) -> None:
        self.path: Optional[Path] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.training:
            return
        folder = next((Path(cb.dirpath) for cb in trainer.checkpoint_callbacks
                       if isinstance(cb, ModelCheckpoint) and cb.dirpath), None)
        if folder is None:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.path = (folder / "interrupted.ckpt").absolute()
        trainer.save_checkpoint(self.path)  # every rank takes part; rank zero writes
