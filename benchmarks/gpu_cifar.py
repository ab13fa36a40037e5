"""A prepared GPU run: the VGG-5 PCN and its backprop twin on CIFAR-10 or CIFAR-100, side by side.

Usage (on a machine with a GPU):

    python -m benchmarks.gpu_cifar --dataset cifar100 --data_dir /path/to/CIFAR-100-dataset [--epochs 50]
    python -m benchmarks.gpu_cifar --data_dir /path/with/cifar-10-batches-py [--epochs 5]
    python -m benchmarks.gpu_cifar --synthetic [--epochs 2]      # no CIFAR on the machine: timing only

`--data_dir` is an image folder (train/<class>/*.png, test/<class>/*.png: the
lossless PNG copies) or a folder holding the pickled batches. Each model is
trained through the real entry point (`train.py --config
configs/<dataset>_vgg5.yaml`, the twin with `--model.class_path
pcn_lightning.BackpropTwin`) for a fixed number of epochs; the script prints the
median epoch time of each (EpochTimer, validation excluded), their ratio, and the
honest test accuracy (label-free inference, checkpoint by validation). With
`--synthetic`, random CIFAR-shaped images in the real on-disk format stand in
for the data (50,000 + 10,000, so an epoch has CIFAR's length): the times are
real, the accuracies are chance and are not printed. `--device cpu --max_batches N`
runs the same path on the CPU (how the test suite checks this script).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def write_synthetic_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random images in CIFAR-10's pickle layout (cifar-10-batches-py/)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    for name, n in [(f"data_batch_{i}", per) for i in range(1, 6)] + [("test_batch", n_test)]:
        entry = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    return root


def scalars(run_dir: Path) -> dict:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def train(name: str, extra: list[str], args, data_dir: Path, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / f"configs/{args.dataset}_vgg5.yaml"), *extra,
           "--data.data_dir", str(data_dir), "--data.download", "false",
           "--trainer.max_epochs", str(args.epochs), "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu",
           "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", name,
           "--trainer.callbacks+=callbacks.epoch_timer.EpochTimer", "--trainer.enable_progress_bar", "false",
           "--data.batch_size", str(args.batch), *args.extra, *(args.pc_extra if name == "pcn" else [])]
    if args.max_batches:
        cmd += ["--trainer.limit_train_batches", str(args.max_batches), "--trainer.limit_val_batches", "1",
                "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0",
                "--data.val_size", str(args.batch)]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    s = scalars(out / name / "version_0")
    return {"epoch_s": statistics.median(s["time/epoch_s"]), "epochs": len(s["time/epoch_s"]),
            "test_top1": s["test/acc_top1"][-1], "test_top5": s["test/acc_top5"][-1], "val_best": max(s["val/acc_top1"])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    ap.add_argument("--data_dir", default=None,
                    help="an image folder (train/<class>/, test/<class>/) or the folder holding the pickled batches")
    ap.add_argument("--synthetic", action="store_true", help="random CIFAR-shaped data: timing only")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--max_batches", type=int, default=0, help="limit batches per epoch (a quick check)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (the config's: 128)")
    ap.add_argument("--pc_extra", type=shlex.split, default=[],
                    help="train.py flags for the PCN only, one quoted string: --pc_extra='--model.T_infer 8'")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags for both runs (last)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.synthetic:
            if args.dataset != "cifar10":
                raise SystemExit("--synthetic writes CIFAR-10-shaped data: use it with --dataset cifar10")
            n_train, n_test = (50_000, 10_000) if not args.max_batches else (5 * args.batch * (args.max_batches + 2), 4 * args.batch)
            data_dir = write_synthetic_cifar10(out / "data", n_train, n_test)
        elif args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            raise SystemExit("give --data_dir (an image folder, or the folder holding the pickled batches) or --synthetic")
        pc = train("pcn", [], args, data_dir, out)
        bp = train("twin", ["--model.class_path", "pcn_lightning.BackpropTwin"], args, data_dir, out)
    print(f"VGG-5, {args.dataset}{' (synthetic data: times only)' if args.synthetic else ''}, {args.epochs} epochs, "
          f"device {args.device}")
    print(f"| model | epoch s (median) | test top-1 % | test top-5 % | best val top-1 % |\n|---|---|---|---|---|")
    for name, r in (("PCN", pc), ("backprop twin", bp)):
        acc, top5, val = (("-",) * 3 if args.synthetic else
                          (f"{100 * r['test_top1']:.2f}", f"{100 * r['test_top5']:.2f}", f"{100 * r['val_best']:.2f}"))
        print(f"| {name} | {r['epoch_s']:.2f} | {acc} | {top5} | {val} |")
    print(f"PC / BP epoch time: {pc['epoch_s'] / bp['epoch_s']:.2f}x")


if __name__ == "__main__":
    main()
