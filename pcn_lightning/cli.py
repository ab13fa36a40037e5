"""The command line: `python train.py --config configs/X.yaml [--trainer.* ...]`.

LightningCLI parses the config and overrides; the data's input size and number
of classes are linked into the model. After fit, the test split is evaluated
(label-free) with the best checkpoint. Every `PCNError` becomes one message on
stderr and exit code 2, before anything is written.

Exit codes: 0 done; 1 diverged, or another DDP process died; 2 a bad config or input, a checkpoint that asks to run
code, or a checkpoint that could not be written (full disk); 130 Ctrl-C and 143
SIGTERM (a scheduler's preemption), both after writing `interrupted.ckpt`.
Checkpoints are read weights-only and written atomically (`pcn_lightning.checkpoints`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from argparse import ArgumentError
from typing import Optional

import lightning as L
import yaml
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.interrupt_checkpoint import InterruptCheckpoint, checkpoint_folder, wait_for_workers
from pcn_lightning import checkpoints
from pcn_lightning.data import input_shape_of, num_classes_of
from pcn_lightning.text import vocab_size_of
from pcn_lightning.errors import ConfigError, DivergenceError, PCNError
from pcn_lightning.flat import flat_aliases


def linked_input_shape(dataset: str, data_dir) -> list[int]:
    """One sample's shape: an image's (C, H, W), or a character's one-hot over the vocabulary."""
    return [vocab_size_of(data_dir)] if dataset == "shakespeare_char" else input_shape_of(dataset, data_dir)


def linked_output_dim(dataset: str, data_dir) -> int:
    """The classes to predict: the dataset's, or the corpus's characters."""
    return vocab_size_of(data_dir) if dataset == "shakespeare_char" else num_classes_of(dataset, data_dir)


# what every config builds on: read before the --config given (see the file)
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


class PCNCLI(LightningCLI):
    def parse_arguments(self, parser, args) -> None:
        """Parse `args` as given. They are this process's own command line, expanded (flat
        flags: `expand_flat_options`), so LightningCLI's warning against passing both `args`
        and a command line, which assumes the two differ, would be noise on every run."""
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

    def add_arguments_to_parser(self, parser) -> None:
        sources = ("data.init_args.dataset", "data.init_args.data_dir")
        parser.link_arguments(sources, "model.init_args.input_shape", compute_fn=linked_input_shape)
        parser.link_arguments(sources, "model.init_args.output_dim", compute_fn=linked_output_dim)
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume training from this checkpoint")
        parser.add_argument("--test", type=bool, default=True,
                            help="evaluate on the test split after fit (label-free)")

    def before_instantiate_classes(self) -> None:
        """--trainer.default_root_dir moves the whole run: a logger's relative save_dir
        (the configs' `logs`) is taken under it."""
        trainer = self.config.get("trainer")
        root = trainer.get("default_root_dir") if trainer is not None else None
        if not root:
            return
        loggers = trainer.get("logger")
        for lg in loggers if isinstance(loggers, list) else [loggers]:
            init = lg.get("init_args") if hasattr(lg, "get") else None
            save_dir = init.get("save_dir") if init is not None else None
            if isinstance(save_dir, str) and not Path(save_dir).is_absolute():
                init["save_dir"] = str(Path(root) / save_dir)


def check_config_files(args: list[str]) -> None:
    """A config that is missing or not valid YAML: one line naming the file and the spot."""
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path} is not valid YAML: {problem}{where}") from None


def check_writable(trainer) -> None:
    """Every folder the run will write (logs, checkpoints) can be written: checked before
    anything is written, by making and removing an empty folder in its nearest existing parent."""
    folders = [Path(lg.save_dir) for lg in trainer.loggers if getattr(lg, "save_dir", None)]
    folders += [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    folders.append(Path(trainer.default_root_dir))
    for folder in folders:
        probe = folder.absolute()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        hint = "choose another --trainer.default_root_dir (or logger save_dir)"
        if not probe.is_dir():
            raise ConfigError(f"cannot write the run's output to {folder}: {probe} is a file, not a folder; {hint}")
        try:
            os.rmdir(tempfile.mkdtemp(dir=probe))
        except OSError as exc:
            raise ConfigError(f"cannot write the run's output to {folder} ({exc.strerror or exc}); {hint}") from None


def check_trainer(trainer) -> None:
    """Trainer settings that cannot work with hand-set gradients."""
    precision = str(trainer.precision)
    if "mixed" in precision:
        raise ConfigError(
            f"precision={precision!r}: mixed precision's gradient scaler would unscale the "
            "hand-set Hebbian gradients; use --trainer.precision 32-true (or bf16-true)"
        )
    if trainer.gradient_clip_val is not None:
        raise ConfigError(
            "gradient_clip_val is refused under manual optimization; clip the hand-set "
            "gradients with --model.init_args.grad_clip_norm instead (remove trainer.gradient_clip_val)"
        )


def check_checkpoint(path: str, model) -> None:
    """A checkpoint to resume from must exist, load weights-only (nothing in it runs) and fit
    the configured architecture."""
    ckpt = checkpoints.load_checkpoint(path, "--ckpt_path")
    state = ckpt.get("state_dict", {})
    mine = model.state_dict()
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape) if k in state else 'missing'} vs model {tuple(v.shape)}"
        for k, v in mine.items()
        if k.startswith("net.") and (k not in state or state[k].shape != v.shape)
    ]
    if wrong:
        raise ConfigError(
            f"--ckpt_path {path} was saved from another architecture ("
            + "; ".join(wrong[:4])
            + "); use the config it was trained with, or start without --ckpt_path"
        )


def stopped(trainer, interrupt: InterruptCheckpoint, exc: SystemExit) -> int:
    """Ctrl-C (130) or SIGTERM (143, 128 + 15 as a shell reports it): say where the run stands."""
    sigterm = isinstance(exc, SIGTERMException)
    if sigterm:
        wait_for_workers(trainer)
    if trainer.is_global_zero:
        where = f"; resume with --ckpt_path {interrupt.path}" if interrupt.path else ""
        what = "stopped by SIGTERM" if sigterm else "interrupted"
        print(f"{what} at training step {trainer.global_step}{where}", file=sys.stderr)
    return 143 if sigterm else 130


def lost_a_peer(exc: BaseException) -> bool:
    """A collective failed under DDP: another process died (gloo: a closed connection) or
    stopped answering (the strategy's collective timeout)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "torch/distributed" in frames[-1].filename.replace("\\", "/")


def best_checkpoint(trainer) -> Optional[str]:
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor is not None and cb.best_model_path:
            return cb.best_model_path
    return None


def pcn_error_in_chain(exc: BaseException) -> Optional[PCNError]:
    """The PCNError behind an exception that jsonargparse wrapped, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PCNError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


LINKED = ("input_dim", "input_shape", "output_dim")


def model_parameters(args: list[str]) -> set:
    """The init arguments of the model class the command line (else its --config) names."""
    import inspect

    import yaml

    path = None
    for i, a in enumerate(args):  # the configs in order: a later one's model wins, as in jsonargparse
        config = args[i + 1] if a in ("--config", "-c") and i + 1 < len(args) else \
            a.split("=", 1)[1] if a.startswith("--config=") else None
        if config is not None:
            try:
                with open(config) as fh:
                    model = (yaml.safe_load(fh) or {}).get("model")
                path = (model.get("class_path") if isinstance(model, dict) else model) or path
            except (OSError, yaml.YAMLError, AttributeError):
                pass
    for i, a in enumerate(args):
        if a in ("--model", "--model.class_path") and i + 1 < len(args):
            path = args[i + 1]
        elif a.startswith(("--model=", "--model.class_path=")):
            path = a.split("=", 1)[1]
    name = str(path or "").rsplit(".", 1)[-1]
    import pcn_lightning

    cls = getattr(pcn_lightning, name, None)
    return set(inspect.signature(cls.__init__).parameters) if inspect.isclass(cls) else set()


def expand_flat_options(args: list[str]) -> list[str]:
    """`--model.T_infer 50` (or `--model.init_args.T_infer=50`) -> `--model.init_args.inference.T_infer 50`:
    every setting keeps its flat name on the command line (see flat.flat_aliases). A null
    value goes in as `--model.init_args.network '{"dims": null}'` (jsonargparse reads a bare
    nested null as the string "None")."""
    table = flat_aliases()
    groups = set(v.split(".")[0] for v in table.values())
    own = model_parameters(args)  # a model's own argument of the same name (the transformer's layers) wins
    table = {k: v for k, v in table.items() if k not in own}
    out, i = [], 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--model."):
            out.append(a)
            continue
        key, eq, value = a[len("--model."):].partition("=")
        name = key[len("init_args."):] if key.startswith("init_args.") else key
        path = table.get(name) or (name if name.split(".")[0] in groups and "." in name else None)
        if path is None:
            out.append(a)
            continue
        if not eq and i < len(args):
            value, eq = args[i], "="
            i += 1
        group, field = path.split(".", 1)
        if eq and value.strip() in ("null", "None", "~"):
            out += [f"--model.init_args.{group}", json.dumps({field: None})]
        else:
            out.append(f"--model.init_args.{path}" + (eq + value if eq else ""))
    return out


def check_no_linked_overrides(args: list[str]) -> None:
    """input_shape and output_dim come from the data; setting them is a mistake."""
    texts = list(args)
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            try:
                texts.append(open(args[i + 1]).read())
            except OSError:
                pass
    for key in LINKED:
        if any(f".{key}" in t or f"{key}:" in t for t in texts):
            raise ConfigError(
                f"model {key} is set from the data (--data.dataset) and cannot be given; "
                f"remove {key} from the command line or config and choose the dataset instead"
            )


class DropAdvertisements(logging.Filter):
    """Lightning's start-up line "Tip: ... try installing litlogger": an advertisement on
    every run, not a message about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Install `DropAdvertisements` on the logger Lightning's rank-zero messages go through (once)."""
    from lightning_utilities.core import rank_zero

    if not any(isinstance(f, DropAdvertisements) for f in rank_zero.log.filters):
        rank_zero.log.addFilter(DropAdvertisements())


def main(args: Optional[list[str]] = None) -> int:
    quiet_lightning()
    try:
        args = expand_flat_options(sys.argv[1:] if args is None else list(args))
        check_config_files(args)
        check_no_linked_overrides(args)
        cli = PCNCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=args,
            save_config_kwargs={"overwrite": False},
            parser_kwargs={"default_env": False, "exit_on_error": False,
                           "default_config_files": [str(BASE_CONFIG)] if BASE_CONFIG.is_file() else []},
        )
        if cli.config.get("print_config"):
            return 0
        check_trainer(cli.trainer)
        check_writable(cli.trainer)
        cli.datamodule.check_ready(cli.trainer.world_size, test=bool(cli.config.get("test")))
        ckpt_path = cli.config.get("ckpt_path")
        if ckpt_path:
            check_checkpoint(ckpt_path, cli.model)
        checkpoints.install(cli.trainer)
        interrupt = InterruptCheckpoint()
        cli.trainer.callbacks.append(interrupt)
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
            if cli.config.get("test"):
                cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best_checkpoint(cli.trainer),
                                 weights_only=True)
        except SystemExit as exc:  # Ctrl-C, or Lightning's SIGTERMException
            if not cli.trainer.interrupted:
                raise
            return stopped(cli.trainer, interrupt, exc)
        return 0
    except DivergenceError as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not lost_a_peer(exc):
            raise
        why = re.sub(r"^\[[^\]]*\]\s*", "", str(exc)).split(". ")[0]
        last = checkpoint_folder(cli.trainer) / "last.ckpt"
        print(f"error: another DDP process stopped, so this one cannot go on ({why}); the checkpoints are "
              f"intact: resume with --ckpt_path {last}", file=sys.stderr)
        return 1
    except (PCNError, MisconfigurationException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ArgumentError) as exc:
        cause = pcn_error_in_chain(exc)
        if cause is None and not isinstance(exc, ArgumentError):
            raise
        if cause is not None:
            message = str(cause)
        else:  # a jsonargparse type error: keep the lines that say what was expected
            lines = [l.strip(" -") for l in str(exc).strip().splitlines()]
            message = "; ".join(l for l in lines if l and "NoneType" not in l and not l.startswith("Given value"))
        print(f"error: {message}\n(see python train.py --help)", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
