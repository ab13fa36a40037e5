"""Wall time of `train.py` on 2 CPU processes (gloo DDP) against 1 process, same global batches.

Usage: python -m benchmarks.ddp_timing [--batches 60] [--per_device 64]

Both runs train the discriminative Fashion-MNIST config on the same global batches
(per-device batch x devices); the DDP run all-reduces the hand-set gradients.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._timing import table

REPO = Path(__file__).resolve().parents[1]


def run(devices: int, per_device: int, batches: int, tmp: str) -> float:
    args = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/fashion_mnist.yaml"),
            "--trainer.max_steps", str(batches), "--trainer.limit_val_batches", "0", "--test", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
            "--trainer.devices", str(devices), "--data.batch_size", str(per_device),
            "--trainer.logger.init_args.save_dir", tmp]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=tmp, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--global_batch", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args.global_batch, args.batches, tmp)
        two = run(2, args.global_batch // 2, args.batches, tmp)
    print(f"{args.batches} steps, global batch {args.global_batch}, {os.cpu_count()} cores (process start-up included)")
    print(table([["1 process", f"{one:.1f}", "1.00"], ["2 processes (gloo DDP)", f"{two:.1f}", f"{two / one:.2f}"]],
                ["run", "wall s", "ratio"]))


if __name__ == "__main__":
    main()
