"""The character language model: temporal PC beside its backprop-through-time twin.

Usage: python -m benchmarks.language [--epochs 10] [--data_dir ../shared/data/tinyshakespeare]
                                     [--workdir DIR] [--extra FLAGS...]

Both are `train.py --config configs/shakespeare_char.yaml` (the twin with
`--model.class_path pcn_lightning.TemporalTwin`): the same network, parameters,
characters, optimizer and number of updates. The PC transformer and its twin
(`--models transformer_pc transformer_twin`) are `configs/shakespeare_transformer.yaml`
(the twin with `--model.class_path pcn_lightning.TransformerTwin`). Reports the best validation bits per
character (the last 10 % of the corpus), wall time, training characters per second
(EpochTimer), and 500 sampled characters from each best checkpoint
(`python -m pcn_lightning.sample`), into benchmarks/LANGUAGE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks._timing import table

REPO = Path(__file__).resolve().parents[1]
CHAR, TRANSFORMER = "configs/shakespeare_char.yaml", "configs/shakespeare_transformer.yaml"
MODELS = {"pc": ("pcn_lightning.TemporalPCNModule", [], "temporal PC (local rules, no BPTT)"),
          "twin": ("pcn_lightning.TemporalTwin", [], "its twin: backprop through time"),
          "pc_window": ("pcn_lightning.TemporalPCNModule", ["--model.recurrent", "false"],
                        "windowed PC (the last 8 characters, no recurrence)"),
          "twin_window": ("pcn_lightning.TemporalTwin", ["--model.recurrent", "false"], "its twin: backprop"),
          "transformer_pc": ("pcn_lightning.TransformerPCNModule", [], "PC transformer (local rules)"),
          "transformer_twin": ("pcn_lightning.TransformerTwin", [], "its twin: backprop")}


def config_of(name: str) -> str:
    return TRANSFORMER if name.startswith("transformer") else CHAR


def run(name: str, args, work: Path) -> dict:
    cls, flags, _ = MODELS[name]
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / config_of(name)),
           "--model.class_path", cls, *flags, "--data.data_dir", args.data_dir, "--trainer.max_epochs", str(args.epochs),
           "--trainer.logger.init_args.save_dir", str(work), "--trainer.logger.init_args.name", name,
           "--trainer.enable_progress_bar", "false", "--test", "false", *args.extra]
    if name.startswith("twin"):  # inference settings do not apply to the twin (the transformer's are dropped by the CLI)
        cmd = [a for i, a in enumerate(cmd) if not (a.startswith("--model.carry") or (i and cmd[i - 1].startswith("--model.carry")))]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    run_dir = sorted((work / name).glob("version_*"))[-1]
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    s = {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    sample = subprocess.run([sys.executable, "-m", "pcn_lightning.sample", "--ckpt", str(best), "--prompt", "ROMEO:",
                             "--chars", "500", "--temperature", "0.8", "--seed", "0"],
                            cwd=REPO, capture_output=True, text=True).stdout
    from pcn_lightning.text import ShakespeareCharDataModule

    import yaml

    data = yaml.safe_load((REPO / config_of(name)).read_text())["data"]["init_args"]
    dm = ShakespeareCharDataModule(data_dir=args.data_dir, batch_size=data["batch_size"], seq_len=data["seq_len"])
    dm.setup()
    per_epoch = len(dm.train_dataloader()) * data["batch_size"] * data["seq_len"]
    epoch_s = statistics.median(s["time/epoch_s"])
    return {"model": name, "val_bits_best": min(s["val/bits_per_char"]), "val_bits_curve": s["val/bits_per_char"],
            "epochs": args.epochs, "train_chars": per_epoch * args.epochs, "wall_s": wall, "epoch_s": epoch_s,
            "chars_per_s": per_epoch / epoch_s, "sample": sample}


def alternated_row(name: str, pc, twin, B: int, L: int, steps: int) -> list[str]:
    """PC's and the twin's training steps alternated on the same random batch of B x L
    characters (no Trainer: the optimizer handed over, logging dropped): one table row."""
    import torch

    from benchmarks._timing import interleaved

    x, y = torch.randint(0, 65, (B, L)), torch.randint(0, 65, (B, L))
    opt, topt = pc.configure_optimizers(), twin.configure_optimizers()
    pc.optimizers, pc.log, twin.log = (lambda: opt), (lambda *a, **k: None), (lambda *a, **k: None)

    def twin_step():
        topt.zero_grad()
        twin.training_step((x, y), 0).backward()
        topt.step()
    t = interleaved({"pc": lambda: pc.training_step((x, y), 0), "twin": twin_step}, repeats=steps, warmup=2)
    return [f"{name} ({B} x {L})", f"{B * L / t['pc']:.0f}", f"{B * L / t['twin']:.0f}", f"{t['pc'] / t['twin']:.2f}"]


def timing(steps: int = 10) -> None:
    """Training characters per second, PC and twin alternated on the same batches (quiet machine):
    the temporal model (recurrent and windowed) and the transformer, each with its shipped config."""
    import torch
    import yaml

    from pcn_lightning import TemporalPCNModule, TemporalTwin, TransformerPCNModule, TransformerTwin
    from pcn_lightning.settings import Inference, Learning

    def config(path):
        cfg = yaml.safe_load((REPO / path).read_text())
        init, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
        return init, data["batch_size"], data["seq_len"], Learning(**{**init["learning"], "lr_scheduler": None})

    init, B, L, learning = config(CHAR)
    rows = []
    for recurrent in (True, False):
        common = dict(hidden=init["hidden"], window=init["window"], extra_layers=init.get("extra_layers", 0),
                      label_precision=init["label_precision"], recurrent=recurrent, learning=learning, output_dim=65)
        pc = TemporalPCNModule(**common, carry=init["carry"], inference=Inference(**init["inference"]))
        rows.append(alternated_row("temporal" if recurrent else "windowed", pc, TemporalTwin(**common), B, L, steps))
    init, B, L, learning = config(TRANSFORMER)
    common = dict(layers=init["layers"], context=init["context"], label_precision=init["label_precision"],
                  learning=learning, output_dim=65)
    pc = TransformerPCNModule(**common, inference=Inference(**init["inference"]))
    rows.append(alternated_row("transformer", pc, TransformerTwin(**common), B, L, steps))
    print(f"threads={torch.get_num_threads()}")
    print(table(rows, ["model", "PC chars/s", "twin chars/s", "PC / twin time"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing", action="store_true", help="only time training steps, side by side")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "LANGUAGE.md"))
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    if args.timing:
        return timing()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for name in args.models:
            res = run(name, args, work)
            print(json.dumps(res), flush=True)
            results.append(res)
    rows = [[MODELS[r["model"]][2], f"{r['val_bits_best']:.3f}", f"{r['train_chars'] / 1e6:.1f} M",
             f"{r['wall_s'] / 60:.1f}", f"{r['chars_per_s']:.0f}"] for r in results]
    text = ("# Character language model on Tiny Shakespeare\n\nMeasured by `python -m benchmarks.language` "
            f"({time.strftime('%Y-%m-%d')}), one run each; validation split (the last 10 % of the corpus).\n\n"
            + table(rows, ["model", "val bits/char (best)", "training chars", "wall min", "train chars/s"])
            + "\n\n" + "\n\n".join(f"Sample ({MODELS[r['model']][2]}, temperature 0.8):\n\n```\n{r['sample']}```"
                                   for r in results)
            + "\n\nRaw:\n\n```\n" + "\n".join(json.dumps({k: v for k, v in r.items() if k != "sample"}) for r in results)
            + "\n```\n")
    Path(args.out).write_text(text)
    print(table(rows, ["model", "val bits/char (best)", "training chars", "wall min", "train chars/s"]))


if __name__ == "__main__":
    main()
