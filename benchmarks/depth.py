"""Depth: residual width-128 PCNs of 4 to 64 hidden layers on Fashion-MNIST, with and
without the muPC parametrization, each beside its backprop twin.

Usage: python -m benchmarks.depth [--depths 4 8 16 32 64] [--epochs 1] [--variants ...]
       python -m benchmarks.depth --timing [--depths ...]      # training step time vs depth

Every run is `train.py --config configs/fashion_mnist_deep.yaml` with the depth and
the variant's settings on the command line: honest test accuracy (label-free,
checkpoint by validation), one seed. Variants:

    pc_mupc_sequential   muPC, T = L sequential sweeps (eta 0.5)
    pc_mupc_sequential_eta09  the same at eta 0.9: over-relaxed (a residual node's curvature
                         is ~2, so 0.5 is the exact coordinate step and 0.9 is SOR's omega 1.8)
    pc_mupc_parallel     muPC, T = L parallel steps (the muPC paper's schedule; eta 0.2)
    pc_standard          no parametrization (xavier weights, no multipliers), sequential
    bp_mupc, bp_standard the backprop twins of the same networks
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "pc_mupc_sequential": ("pcn", "mupc", ["--model.schedule", "sequential", "--model.eta_infer", "0.5"]),
    "pc_mupc_sequential_eta09": ("pcn", "mupc", ["--model.schedule", "sequential", "--model.eta_infer", "0.9"]),
    "pc_mupc_parallel": ("pcn", "mupc", ["--model.schedule", "parallel", "--model.eta_infer", "0.2"]),
    "pc_standard": ("pcn", "standard", ["--model.schedule", "sequential", "--model.eta_infer", "0.5"]),
    "bp_mupc": ("twin", "mupc", []),
    "bp_standard": ("twin", "standard", []),
}


def layers(depth: int) -> str:
    return ("[{flatten: {}, dense: {units: 128}}, "
            f"{{dense: {{units: 128, pre_activation: relu}}, skip: true, repeat: {depth - 1}}}, "
            "{dense: {pre_activation: relu}}]")


def run(variant: str, depth: int, epochs: int, workdir: Path, extra: list[str], pc_extra: list[str] = ()) -> dict:
    kind, param, flags = VARIANTS[variant]
    name = f"{variant}_L{depth}"
    args = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/fashion_mnist_deep.yaml"),
            "--model.layers", layers(depth), "--model.parametrization", param, "--trainer.max_epochs", str(epochs),
            "--trainer.logger.init_args.save_dir", str(workdir), "--trainer.logger.init_args.name", name,
            "--trainer.enable_progress_bar", "false"]
    if kind == "pcn":
        args += ["--model.T_infer", str(depth), *flags]
    else:
        args += ["--model.class_path", "pcn_lightning.BackpropTwin"]
    args += [*extra, *(pc_extra if kind == "pcn" else [])]  # last: they override the variant's settings
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    out = {"variant": variant, "depth": depth, "epochs": epochs, "wall_s": time.perf_counter() - t0}
    if r.returncode != 0:
        out["error"] = [l for l in r.stderr.splitlines() if l.startswith("error:")][-1:] or r.stderr[-500:]
        return out
    ea = EventAccumulator(str(workdir / name / "version_0"), size_guidance={"scalars": 0})
    ea.Reload()
    s = {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    out.update(test_top1=s["test/acc_top1"][-1], val_best=max(s["val/acc_top1"]),
               epoch_s=statistics.median(s["time/epoch_s"]))
    return out


def timing(depths: list[int], T: int, batch: int = 128, repeats: int = 5) -> list[dict]:
    """Training step time against depth at a fixed T (and at T = L), side by side with BP."""
    from benchmarks._timing import median_time
    from pcn_lightning import BackpropTwin, PCNModule

    rows = []
    for depth in depths:
        spec = dict(direction="discriminative", parametrization="mupc", dims=None,
                    layers=[{"flatten": {}, "dense": {"units": 128}},
                            {"dense": {"units": 128, "pre_activation": "relu"}, "skip": True, "repeat": depth - 1},
                            {"dense": {"pre_activation": "relu"}}])
        x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
        row = {"depth": depth}
        for label, t in (("fixed_T", T), ("T_eq_L", depth)):
            m = PCNModule.from_flat(**spec, input_shape=[1, 28, 28], output_dim=10, latent_init="feedforward",
                                    T_infer=t, eta_infer=0.5, schedule="sequential", eta_learn=0.01, optimizer="adam")
            opt = m.configure_optimizers()
            m.optimizers, m.log = (lambda: opt), (lambda *a, **k: None)
            row[f"pc_{label}_ms"] = 1e3 * median_time(lambda: m.training_step((x, y), 0), repeats=repeats, warmup=1)
        twin = BackpropTwin.from_flat(**spec, input_shape=[1, 28, 28], output_dim=10, eta_learn=0.01, optimizer="adam")
        topt = torch.optim.Adam(twin.parameters(), lr=0.01)

        def bp_step():
            topt.zero_grad()
            loss = 0.5 * (torch.nn.functional.one_hot(y, 10).float() - twin(x)).pow(2).sum(1).mean()
            loss.backward()
            topt.step()
        row["bp_ms"] = 1e3 * median_time(bp_step, repeats=repeats, warmup=1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--T", type=int, default=8, help="the fixed T of the timing table")
    ap.add_argument("--pc_extra", type=shlex.split, default=[],
                    help="train.py flags for the PC runs only, one quoted string: --pc_extra='--model.T_infer 8'")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="train.py flags for every run (last)")
    args = ap.parse_args()
    if args.timing:
        timing(args.depths, args.T)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            for variant in args.variants:
                print(json.dumps(run(variant, depth, args.epochs, Path(tmp), args.extra, args.pc_extra)), flush=True)


if __name__ == "__main__":
    main()
