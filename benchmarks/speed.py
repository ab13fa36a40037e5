"""PC against backprop, side by side: the training step of a shipped config and of
its backprop twin, alternated in one process (the same batches, threads and load),
and their ratio; times the steps of an epoch for the epoch estimate. Fashion-MNIST
configs step on its images; others (CIFAR) on random tensors of their data's shape.

Usage: python -m benchmarks.speed [--configs fashion_mnist cifar10_small] [--T 4 8] [--steps 20]
       [--weight_errors settled on_arrival]   (--T 0: the config's own T_infer)
"""

from __future__ import annotations

import argparse
import json

import torch
import yaml

from benchmarks._timing import interleaved, table
from pcn_lightning import BackpropTwin, PCNModule
from pcn_lightning.data import PCNDataModule, input_shape_of, num_classes_of
from pcn_lightning.settings import Inference, Learning

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules(config: str, T: int, schedule=None, eta=None, weight_errors=None):
    """(PC module, its twin, batch size, dataset) of a shipped config, with overrides
    (T 0: the config's own)."""
    cfg = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())
    init = cfg["model"]["init_args"]
    data = cfg["data"]["init_args"]
    overrides = {**({"T_infer": T} if T else {}), **({"schedule": schedule} if schedule else {}),
                 **({"eta_infer": eta} if eta else {})}
    inference = Inference(**{**init.get("inference", {}), **overrides})
    learning = Learning(**{**init.get("learning", {}), "lr_scheduler": None,  # no Trainer here: no schedule
                           **({"weight_errors": weight_errors} if weight_errors else {})})
    dataset = data.get("dataset", "fashion_mnist")
    shape, classes = input_shape_of(dataset), num_classes_of(dataset)
    torch.manual_seed(0)
    pc = PCNModule(init["network"], inference, learning=learning, input_shape=shape, output_dim=classes)
    torch.manual_seed(0)
    bp = BackpropTwin(init["network"], learning, input_shape=shape, output_dim=classes)
    return pc, bp, data.get("batch_size", 128), dataset


def steppable(pc, bp):
    """The PC module and its twin made to step without a Trainer: their optimizers
    (the PC module's handed to it as `optimizers()`), logging off."""
    opt = pc.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    pc.optimizers, pc.log = (lambda: opt), (lambda *a, **k: None)
    bopt = bp.configure_optimizers()
    bopt = bopt["optimizer"] if isinstance(bopt, dict) else bopt
    bp.log = lambda *a, **k: None
    return opt, bopt


def batch(dataset: str, B: int, fashion: list):
    """A training batch: Fashion-MNIST's images, or random ones of the dataset's shape."""
    if dataset == "fashion_mnist":
        if not fashion:
            dm = PCNDataModule("fashion_mnist", batch_size=128)
            dm.setup("fit")
            fashion.extend(dm.train_set.tensors)
        return fashion[0][:B], fashion[1][:B]
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, *input_shape_of(dataset), generator=g),
            torch.randint(0, num_classes_of(dataset), (B,), generator=g))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["fashion_mnist", "fashion_mnist_conv"])
    ap.add_argument("--T", type=int, nargs="+", default=[4, 8, 20])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--schedule", default=None, help="override the config's schedule")
    ap.add_argument("--eta_infer", type=float, default=None, help="override the config's eta_infer")
    ap.add_argument("--weight_errors", nargs="+", default=[None], help="override the config's weight_errors")
    args = ap.parse_args()
    fashion: list = []
    rows = []
    for config, T, weight_errors in [(c, T, w) for c in args.configs for T in args.T for w in args.weight_errors]:
            pc, bp, B, dataset = modules(config, T, args.schedule, args.eta_infer, weight_errors)
            x, y = batch(dataset, B, fashion)
            opt, bopt = steppable(pc, bp)

            def pc_step():
                pc.training_step((x, y), 0)

            def bp_step():
                bopt.zero_grad()
                bp.training_step((x, y), 0).backward()
                bopt.step()
            t = interleaved({"pc": pc_step, "bp": bp_step}, repeats=args.steps, warmup=2)
            steps = (55000 if dataset == "fashion_mnist" else 45000) // B  # the training split after validation
            row = {"config": config, "T": pc.inference.T_infer, "schedule": pc.inference.schedule,
                   "weight_errors": pc.learning.weight_errors, "pc_ms": 1e3 * t["pc"],
                   "bp_ms": 1e3 * t["bp"], "ratio": t["pc"] / t["bp"], "pc_epoch_s": t["pc"] * steps,
                   "bp_epoch_s": t["bp"] * steps}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"threads={torch.get_num_threads()}")
    print(table([[r["config"], r["T"], r["schedule"], r["weight_errors"], f"{r['pc_ms']:.1f}", f"{r['bp_ms']:.1f}", f"{r['ratio']:.2f}",
                  f"{r['pc_epoch_s']:.0f}", f"{r['bp_epoch_s']:.0f}"] for r in rows],
                ["config", "T", "schedule", "weight errors", "PC step ms", "BP step ms", "PC / BP", "PC epoch s (steps only)", "BP epoch s"]))


if __name__ == "__main__":
    main()
