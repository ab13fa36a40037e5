"""PC against backprop, side by side: the training step of a shipped config and of
its backprop twin, alternated in one process (the same batches, threads and load),
and their ratio; times the steps of an epoch for the epoch estimate.

Usage: python -m benchmarks.speed [--configs fashion_mnist fashion_mnist_conv] [--T 4 8 20] [--steps 20]
"""

from __future__ import annotations

import argparse
import json

import torch
import yaml

from benchmarks._timing import interleaved, table
from pcn_lightning import BackpropTwin, PCNModule
from pcn_lightning.data import PCNDataModule
from pcn_lightning.settings import Inference, Learning

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules(config: str, T: int, schedule=None, eta=None):
    cfg = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())
    init = cfg["model"]["init_args"]
    data = cfg["data"]["init_args"]
    overrides = {"T_infer": T, **({"schedule": schedule} if schedule else {}), **({"eta_infer": eta} if eta else {})}
    inference = Inference(**{**init.get("inference", {}), **overrides})
    learning = Learning(**{**init.get("learning", {}), "lr_scheduler": None})  # no Trainer here: no schedule
    torch.manual_seed(0)
    pc = PCNModule(init["network"], inference, learning=learning, input_shape=[1, 28, 28], output_dim=10)
    torch.manual_seed(0)
    bp = BackpropTwin(init["network"], learning, input_shape=[1, 28, 28], output_dim=10)
    return pc, bp, data.get("batch_size", 128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["fashion_mnist", "fashion_mnist_conv"])
    ap.add_argument("--T", type=int, nargs="+", default=[4, 8, 20])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--schedule", default=None, help="override the config's schedule")
    ap.add_argument("--eta_infer", type=float, default=None, help="override the config's eta_infer")
    args = ap.parse_args()
    dm = PCNDataModule("fashion_mnist", batch_size=128)
    dm.setup("fit")
    x_all, y_all = dm.train_set.tensors
    rows = []
    for config in args.configs:
        for T in args.T:
            pc, bp, B = modules(config, T, args.schedule, args.eta_infer)
            x, y = x_all[:B], y_all[:B]
            opt = pc.configure_optimizers()
            opt = opt["optimizer"] if isinstance(opt, dict) else opt
            pc.optimizers, pc.log = (lambda: opt), (lambda *a, **k: None)
            bopt = bp.configure_optimizers()
            bopt = bopt["optimizer"] if isinstance(bopt, dict) else bopt
            bp.log = lambda *a, **k: None

            def pc_step():
                pc.training_step((x, y), 0)

            def bp_step():
                bopt.zero_grad()
                bp.training_step((x, y), 0).backward()
                bopt.step()
            t = interleaved({"pc": pc_step, "bp": bp_step}, repeats=args.steps, warmup=2)
            steps = len(x_all) // B
            row = {"config": config, "T": T, "schedule": pc.inference.schedule, "pc_ms": 1e3 * t["pc"],
                   "bp_ms": 1e3 * t["bp"], "ratio": t["pc"] / t["bp"], "pc_epoch_s": t["pc"] * steps,
                   "bp_epoch_s": t["bp"] * steps}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"threads={torch.get_num_threads()}")
    print(table([[r["config"], r["T"], r["schedule"], f"{r['pc_ms']:.1f}", f"{r['bp_ms']:.1f}", f"{r['ratio']:.2f}",
                  f"{r['pc_epoch_s']:.0f}", f"{r['bp_epoch_s']:.0f}"] for r in rows],
                ["config", "T", "schedule", "PC step ms", "BP step ms", "PC / BP", "PC epoch s (steps only)", "BP epoch s"]))


if __name__ == "__main__":
    main()
