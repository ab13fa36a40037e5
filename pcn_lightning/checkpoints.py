"""Checkpoints: read weights-only, written atomically.

Reading. A checkpoint is a pickle, and a full unpickler calls whatever the file
names (a file can say "call os.system('...')"). Every load in this project is
`torch.load(..., weights_only=True)`: tensors, containers, numbers and strings,
plus the few classes the project's own checkpoints hold (`SAFE_TYPES`, registered
with `torch.serialization.add_safe_globals` when `pcn_lightning` is imported, so
Lightning's own weights-only loads accept them too). A file naming anything else
is refused with one message, and nothing in it runs.

Writing. `AtomicCheckpointIO` writes each checkpoint to a temporary file beside it,
flushes it to disk, then renames it over the real name: a crash (kill -9, power
loss) or a full disk mid-write leaves the earlier file whole, never a partial one.
`train.py` installs it on every run.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pcn_lightning.builders import NetworkSpec
from pcn_lightning.errors import ConfigError, PCNError
from pcn_lightning.settings import EvalInference, Inference, Learning

# What a checkpoint saved from the Python API holds besides tensors and plain data: the
# settings dataclasses in its hyper-parameters, and paths (a data module's data_dir).
SAFE_TYPES = [NetworkSpec, Inference, EvalInference, Learning, pathlib.PosixPath, pathlib.WindowsPath]
torch.serialization.add_safe_globals(SAFE_TYPES)

# The modules a checkpoint may name as its class (`hyper_parameters._class_path`).
MODULE_CLASSES = ("PCNModule", "BackpropTwin", "TemporalPCNModule", "TemporalTwin")


class CheckpointWriteError(PCNError):
    """A checkpoint could not be written (full disk, no permission); the earlier ones are intact."""


def load_checkpoint(path, flag: str = "--ckpt_path") -> dict:
    """The checkpoint at `path` as a dict, weights-only, on the CPU; `flag` names it in errors."""
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file{dangling_link_hint(path)}") from None
    except IsADirectoryError:
        raise ConfigError(f"{flag} {path} is a folder; give a .ckpt file in it") from None
    except Exception as exc:
        message = str(exc)
        if "Weights only load failed" in message and looks_like_pickle(path):
            named = re.search(r"GLOBAL (\S+)", message)
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", message)
            what = (f"asks to run code when loaded (it names {named.group(1)}) and was refused" if named else
                    f"holds what a weights-only load refuses ({detail.group(1).strip() if detail else 'unknown'})")
            raise ConfigError(
                f"{flag} {path} {what}: nothing in it ran. A checkpoint holds tensors and settings only; "
                "use a file from a source you trust (README: 'Loading a checkpoint from someone else')"
            ) from None
        first = "not a zip or pickle file" if "Weights only" in message else (message.splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{flag} {path} is not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{flag} {path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def looks_like_pickle(path) -> bool:
    """A zip (torch.save's format) or a pickle (protocol 2+): the refusals worth naming."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def dangling_link_hint(path) -> str:
    """For a link whose file is gone (a run killed between Lightning's removing the previous
    `latest-*.ckpt` and relinking `last.ckpt`): the newest complete checkpoint beside it."""
    path = Path(path)
    if not path.is_symlink():
        return ""
    others = sorted((p for p in path.parent.glob("*.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime)
    newest = f"; resume from {others[-1]}, the newest checkpoint there" if others else ""
    return f" (it links to {os.readlink(path)}, which is gone{newest})"


def load_module(path, allowed: tuple[str, ...] = MODULE_CLASSES, flag: str = "--ckpt"):
    """A trained module from a checkpoint, weights-only, on the CPU. Its class is the one the
    checkpoint names among `allowed` (the first when it names none: saved from the Python API)."""
    import pcn_lightning

    ckpt = load_checkpoint(path, flag)
    named = str(ckpt.get("hyper_parameters", {}).get("_class_path", allowed[0])).rsplit(".", 1)[-1]
    if named not in allowed:
        raise ConfigError(f"{flag} {path} holds a {named}; this needs one of {', '.join(allowed)}")
    cls = getattr(pcn_lightning, named)
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{flag} {path} is not a loadable {named} checkpoint ({type(exc).__name__}: {exc})") from None


def write_atomically(path, write) -> None:
    """`write(file)` into a temporary file beside `path`, flushed to disk, then renamed over `path`:
    readers see the old file or the new one, never a part. An OSError (a full disk) leaves no trace."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (exc.strerror or str(exc))
        raise CheckpointWriteError(
            f"could not write the checkpoint {path}: {why}; the checkpoints already in {path.parent} are intact. "
            f"{'Free space there' if full else 'Fix the folder'} (or move the run with --trainer.default_root_dir), "
            f"then resume with --ckpt_path {path.parent / 'last.ckpt'}"
        ) from None
    try:  # the rename itself survives a power loss once the folder is flushed
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # not every filesystem can flush a folder


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, with writes made atomic on local disks
    (`write_atomically`) and loads weights-only. Remote paths (s3://...) keep Lightning's own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only: Optional[bool] = None):
        return super().load_checkpoint(path, map_location, weights_only=True)


def relink(target, linkpath) -> None:
    """Point the link `linkpath` at `target` in one step: a new link made beside it under a
    hidden name, then renamed over it (a rename is atomic), so that `linkpath` names the old
    checkpoint or the new one at every instant, never nothing. Where links cannot be made
    (Windows without the right), the file is copied atomically instead."""
    linkpath = Path(linkpath)
    tmp = linkpath.parent / f".{linkpath.name}.{uuid.uuid4().hex[:8]}.link"
    try:
        os.symlink(os.path.relpath(target, linkpath.parent), tmp)
    except OSError:
        write_atomically(linkpath, lambda fh: fh.write(Path(target).read_bytes()))
        return
    os.replace(tmp, linkpath)


class LinkedLast:
    """A ModelCheckpoint with `save_last: link`, made safe against a kill at any instant.
    Lightning removes the previous `latest-*.ckpt` (its top-k of one) before it re-points
    `last.ckpt`, and re-points it by deleting the link first: either way a kill in between
    leaves `last.ckpt` dangling. Here removals wait until `last.ckpt` points at the new
    checkpoint, and the link is switched by `relink`."""

    def __init__(self, callback) -> None:
        self.callback, self.pending = callback, []
        self.remove, self.save_last = callback._remove_checkpoint, callback._save_last_checkpoint
        callback._remove_checkpoint = self.defer_removal
        callback._save_last_checkpoint = self.save_last_then_remove
        callback._link_checkpoint = self.link

    def defer_removal(self, trainer, filepath) -> None:
        self.pending.append(filepath)

    def save_last_then_remove(self, trainer, monitor_candidates) -> None:
        self.save_last(trainer, monitor_candidates)
        pending, self.pending = self.pending, []
        keep = {self.callback.last_model_path, self.callback.best_model_path, self.callback._last_checkpoint_saved}
        for path in pending:
            if path not in keep:
                self.remove(trainer, path)

    @staticmethod
    def link(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            relink(filepath, linkpath)
        trainer.strategy.barrier()


def install(trainer) -> None:
    """Every checkpoint the trainer writes goes through `AtomicCheckpointIO` (unless the
    config chose its own CheckpointIO plugin), and every `save_last: link` switches its link
    atomically (`LinkedLast`)."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last == "link" and not getattr(cb, "_pcn_linked_last", False):
            cb._pcn_linked_last = True
            LinkedLast(cb)
