"""Which regime a trained PC model learns in: on real training batches, with its
checkpoint's weights and its own settle (label clamped or nudged as in training),
each term's update cosine to backprop's gradient (the twin's autograd on the same
weights and batch; >= 0.99: backprop's regime, below: PC proper), how far inference
moved the latents from the feedforward state, and the energy's relative drop over the
settle's last step.

Usage: python -m benchmarks.regime CKPT [CKPT ...] --data_dir DIR [--batches 4]
"""

from __future__ import annotations

import argparse
import json

import torch

from callbacks.settle_check import backprop_cosines, displacements
from pcn_lightning.checkpoints import load_module
from pcn_lightning.data import PCNDataModule


def regime(module, x, y) -> dict:
    gen = torch.Generator().manual_seed(0)
    xs, result = module.settle_probe(x, y, gen)
    total = result.trace.double().sum(1)
    drop = ((total[-2] - total[-1]) / total[-2]).item() if total.numel() > 1 else float("nan")
    cos = backprop_cosines(module, x, y, result.errors)
    return {"bp_cosine": cos, "displacement": displacements(module, x, xs), "last_step_drop": drop}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--dataset", default=None, help="cifar10 or cifar100 (default: the checkpoint's output size)")
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args()
    for path in args.ckpts:
        m = load_module(path).eval()
        dataset = args.dataset or ("cifar100" if m.net.num_classes == 100 else "cifar10")
        dm = PCNDataModule(dataset, args.data_dir, batch_size=128, augment=False, val_size=5000)
        dm.setup("fit")
        rows = [regime(m, x, y) for (x, y), _ in zip(dm.train_dataloader(), range(args.batches))]
        mean = lambda key: {k: sum(r[key][k] for r in rows) / len(rows) for k in rows[0][key]}
        out = {"ckpt": path, "bp_cosine": mean("bp_cosine"), "displacement": mean("displacement"),
               "last_step_drop": sum(r["last_step_drop"] for r in rows) / len(rows)}
        out["least_cosine"] = min(out["bp_cosine"].values())
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
