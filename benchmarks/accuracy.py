"""Honest accuracy on Fashion-MNIST (offline): PCNs beside their backprop twins.

Usage: python -m benchmarks.accuracy [--seeds 0 1 2] [--runs NAME ...] [--out benchmarks/ACCURACY.md]

Each run is the real entry point, `python train.py --config ...`, with a seed.
Model selection uses the validation split only (the best checkpoint by val
accuracy); the reported numbers are the official test split, with no label
reaching inference. For the generative model, the same checkpoints are also
scored with the label clamped during test inference, the seed's protocol, which
is a label leak and is labelled as one.
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

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
NOTES = "<!-- notes: kept when the table is regenerated -->"

def precision(nu: float) -> list[str]:
    return ["--model.learn_precision", "true", "--model.precision_prior", str(nu), "--model.predictive_precision", "true",
            "--trainer.callbacks+=callbacks.reliability.ReliabilityDiagram"]


PRECISION = precision(1.0)
EIGHT = ["--data.classes", "[0, 1, 2, 3, 4, 5, 6, 7]"]

# the MLP config's recipe until 2026-12-03: T 4 parallel steps at eta 0.1, learning from the settled errors
SETTLED_MLP = ["--model.T_infer", "4", "--model.schedule", "parallel", "--model.eta_infer", "0.1",
               "--model.weight_errors", "settled"]
# the conv config's recipe until 2026-12-03: T 8 parallel steps, learning from the settled errors
SETTLED_CONV = ["--model.schedule", "parallel", "--model.eta_infer", "0.1", "--model.weight_errors", "settled",
                "--model.precisions", "[1.0, 1.0, 1.0, 0.01]"]

RUNS = {
    # name: (config, extra args, description)
    "pcn_discriminative": ("configs/fashion_mnist.yaml", [], "PCN, discriminative (configs/fashion_mnist.yaml: one sweep, errors on arrival)"),
    "pcn_discriminative_T4": ("configs/fashion_mnist.yaml", SETTLED_MLP,
                              "the settled recipe: T_infer 4 parallel steps at eta 0.1 (the config until 2026-12-03)"),
    "pcn_discriminative_T1": ("configs/fashion_mnist.yaml", [*SETTLED_MLP, "--model.T_infer", "1"],
                              "the settled recipe at T_infer 1 (one parallel step)"),
    "pcn_discriminative_T2": ("configs/fashion_mnist.yaml", [*SETTLED_MLP, "--model.T_infer", "2"],
                              "the settled recipe at T_infer 2"),
    "pcn_discriminative_T8": ("configs/fashion_mnist.yaml", [*SETTLED_MLP, "--model.T_infer", "8"],
                              "the settled recipe at T_infer 8"),
    "pcn_discriminative_T20": ("configs/fashion_mnist.yaml", [*SETTLED_MLP, "--model.T_infer", "20"],
                               "the same at T_infer 20 (the config until 2026-11-30)"),
    "twin_discriminative": ("configs/fashion_mnist.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"],
                            "backprop twin of the above (same dims, init, Adam, lr, epochs)"),
    "pcn_discriminative_unit_precision": ("configs/fashion_mnist.yaml", [*SETTLED_MLP, "--model.precisions", "null"],
                                          "PCN, discriminative, all precisions 1 (the seed's energy)"),
    "pcn_generative": ("configs/fashion_mnist_generative.yaml", [],
                       "PCN, generative, amortized, readout learned on label-free settles (configs/fashion_mnist_generative.yaml)"),
    "pcn_generative_clamped_readout": ("configs/fashion_mnist_generative.yaml", ["--model.readout_learning", "clamped"],
                                       "the same, readout learned on the label-clamped settles (the seed's rule)"),
    "twin_generative": ("configs/fashion_mnist_generative.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"],
                        "backprop twin of the generative model (same shapes, Adam, lr, epochs)"),
    "pcn_generative_seed": ("configs/fashion_mnist_seed_recipe.yaml", [],
                            "PCN, generative, the seed's recipe (SGD, T_infer 50, batch 500)"),
    "twin_generative_seed": ("configs/fashion_mnist_seed_recipe.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"],
                             "backprop twin of the seed's recipe (same shape, SGD 0.005, epochs)"),
    "pcn_discriminative_precision": ("configs/fashion_mnist.yaml", SETTLED_MLP + PRECISION, "PCN, discriminative, learned precisions (Gamma prior nu 1) and predictive precision"),
    "pcn_generative_T40": ("configs/fashion_mnist_generative.yaml", ["--model.T_infer", "40", "--model.T_infer_eval", "20"],
                           "PCN, generative, T_infer 40 in training (20 at evaluation)"),
    "pcn_discriminative_precision_nu10": ("configs/fashion_mnist.yaml", SETTLED_MLP + precision(10.0), "PCN, discriminative, learned precisions (Gamma prior nu 10) and predictive precision"),
    "pcn_generative_precision": ("configs/fashion_mnist_generative.yaml", PRECISION, "PCN, generative, learned precisions (Gamma prior nu 1) and predictive precision"),
    "pcn_generative_precision_nu01": ("configs/fashion_mnist_generative.yaml", precision(0.1),
                                      "PCN, generative, learned precisions (Gamma prior nu 0.1) and predictive precision"),
    "twin_discriminative_ce": ("configs/fashion_mnist.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin", "--model.init_args.loss", "ce"],
                               "backprop twin of the discriminative PCN, cross-entropy loss"),
    "pcn_discriminative_precision_8cls": ("configs/fashion_mnist.yaml", SETTLED_MLP + PRECISION + EIGHT, "PCN, discriminative, learned precisions (nu 1), trained on classes 0-7 (OOD: 8, 9)"),
    "twin_discriminative_8cls": ("configs/fashion_mnist.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"] + EIGHT, "its twin, classes 0-7"),
    "twin_discriminative_ce_8cls": ("configs/fashion_mnist.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin", "--model.init_args.loss", "ce"] + EIGHT, "its cross-entropy twin, classes 0-7"),
    "pcn_generative_precision_8cls": ("configs/fashion_mnist_generative.yaml", PRECISION + EIGHT, "PCN, generative, learned precisions (nu 1), trained on classes 0-7"),
    "twin_generative_8cls": ("configs/fashion_mnist_generative.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"] + EIGHT, "its twin, classes 0-7"),
    "pcn_seed_deep": ("configs/fashion_mnist_seed_deep.yaml", [], "the seed's deep shape, failing (configs/fashion_mnist_seed_deep.yaml)"),
    "pcn_seed_deep_precision": ("configs/fashion_mnist_seed_deep.yaml", precision(0.1) + ["--model.precision_shape", "unit"],
                                "the same, learned per-unit precisions (Gamma prior nu 0.1)"),
    "twin_seed_deep": ("configs/fashion_mnist_seed_deep.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"], "backprop twin of the failing deep shape"),
    "pcn_seed_deep_fixed": ("configs/fashion_mnist_seed_deep_fixed.yaml", [], "the seed's deep shape, fixed (configs/fashion_mnist_seed_deep_fixed.yaml)"),
    "twin_seed_deep_fixed": ("configs/fashion_mnist_seed_deep_fixed.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"], "its backprop twin"),
    "pcn_deep64": ("configs/fashion_mnist_deep.yaml", [],
                   "residual PCN, 64 hidden layers of 128, muPC, 8 sequential sweeps (configs/fashion_mnist_deep.yaml)"),
    "twin_deep64": ("configs/fashion_mnist_deep.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"],
                    "its backprop twin"),
    "pcn_conv": ("configs/fashion_mnist_conv.yaml", [],
                 "conv PCN (configs/fashion_mnist_conv.yaml: one sweep, errors on arrival)"),
    "twin_conv": ("configs/fashion_mnist_conv.yaml", ["--model.class_path", "pcn_lightning.BackpropTwin"],
                  "backprop twin of the conv PCN (same blocks, init, AdamW, lr, epochs)"),
    **{f"pcn_conv_T{T}": ("configs/fashion_mnist_conv.yaml", [*SETTLED_CONV, "--model.T_infer", str(T)],
                          f"conv PCN, the settled recipe at T_infer {T} (parallel, eta 0.1, label precision 0.01)")
       for T in (1, 2, 4, 8, 20)},
}


def scalars(run_dir: Path) -> dict[str, list[float]]:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def label_clamped_accuracy(ckpt: Path, data_dir: str | None = None) -> float:
    """The seed's protocol: settle with the label clamped, then read the readout (a leak).

    The test split is the one the checkpoint was trained beside (its saved data
    settings: dataset, normalization, classes); `data_dir` overrides its folder."""
    from pcn_lightning.checkpoints import load_checkpoint, load_module
    from pcn_lightning.data import PCNDataModule
    from pcn_lightning.generation import label_term

    m = load_module(ckpt, ("PCNModule",))  # weights-only
    saved = {k: v for k, v in (load_checkpoint(ckpt).get("datamodule_hyper_parameters") or {"dataset": "fashion_mnist"}).items()
             if not k.startswith("_")}
    if data_dir is not None:
        saved["data_dir"] = data_dir
    saved.update(batch_size=500, eval_batch_size=500, augment=False)
    dm = PCNDataModule(**saved)
    dm.setup("test")
    correct = total = 0
    readout = m.net.terms[label_term(m.net)]  # the label's term: what predicts the label from its source
    for i, (x, y) in enumerate(dm.test_dataloader()):
        xs, _ = m.settle_batch(x, y, m.eval_inference, generator=torch.Generator().manual_seed(i))
        pred = readout.map.predict(xs[readout.source])[0].argmax(1)
        correct += (pred == y).sum().item()
        total += len(y)
    return correct / total


def run_one(name: str, seed: int, workdir: Path) -> dict:
    config, extra, _ = RUNS[name]
    args = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / config), *extra,
            "--seed_everything", str(seed), *([] if any("BackpropTwin" in a for a in extra) else ["--model.seed", str(seed)]),
            "--trainer.logger.init_args.save_dir", str(workdir), "--trainer.logger.init_args.name", f"{name}_s{seed}",
            "--trainer.enable_progress_bar", "false", "--trainer.callbacks+=callbacks.epoch_timer.EpochTimer"]
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{r.stderr[-3000:]}")
    run_dir = sorted((workdir / f"{name}_s{seed}").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    s = scalars(run_dir)
    out = {
        "name": name, "seed": seed, "wall_s": wall,
        "epochs": len(s.get("val/acc_top1", [])),
        "val_best": max(s["val/acc_top1"]),
        "test_top1": s["test/acc_top1"][-1], "test_top3": s["test/acc_top3"][-1],
        "epoch_s": statistics.median(s["time/epoch_s"]) if "time/epoch_s" in s else None,
    }
    if "precision/predictive" in s:
        out["predictive_precision"] = s["precision/predictive"][-1]
        out["precisions"] = {t.split("/", 1)[1]: v[-1] for t, v in s.items() if t.startswith("precision/")}
    if "val/ece" in s:
        out["val_ece_last"] = s["val/ece"][-1]
    if name.startswith("pcn_generative") and "8cls" not in name:
        best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
        out["test_top1_label_clamped"] = label_clamped_accuracy(best)
    return out


def fmt(values: list[float]) -> str:
    m = statistics.mean(values) * 100
    sd = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "ACCURACY.md"))
    ap.add_argument("--workdir", default=None, help="keep the runs (checkpoints, logs) here instead of a temporary folder")
    ap.add_argument("--from_logs", nargs="+", default=None,
                    help="build the table from the JSON lines earlier runs printed, without training")
    args = ap.parse_args()
    results = []
    if args.from_logs:
        for f in args.from_logs:
            results += [json.loads(l) for l in Path(f).read_text().splitlines() if l.startswith("{")]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.workdir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for name in args.runs:
                for seed in args.seeds:
                    res = run_one(name, seed, work)
                    print(json.dumps(res), flush=True)
                    results.append(res)
    rows = []
    for name in [n for n in RUNS if any(r["name"] == n for r in results)]:
        rs = [r for r in results if r["name"] == name]
        row = [RUNS[name][2], str(rs[0]["epochs"]), str(len(rs)), fmt([r["test_top1"] for r in rs]),
               fmt([r["test_top3"] for r in rs]), fmt([r["val_best"] for r in rs]),
               f"{statistics.mean(r['wall_s'] for r in rs) / 60:.1f}"]
        if "test_top1_label_clamped" in rs[0]:
            row[0] += f"; with the label clamped in test inference (a leak, not accuracy): {fmt([r['test_top1_label_clamped'] for r in rs])}"
        rows.append(row)
    header = ["model", "epochs", "seeds", "test top-1 % (mean ± sd)", "test top-3 %", "best val top-1 %", "wall min/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    cpu = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    text = (f"# Honest accuracy on Fashion-MNIST\n\nMeasured by `python -m benchmarks.accuracy` on {cpu} "
            f"({time.strftime('%Y-%m-%d')}). Test split (10,000 images), no label in inference; "
            "checkpoint chosen by validation accuracy (5,000 images carved from the training set).\n\n"
            f"{table}\n\nRaw results:\n\n```\n" + "\n".join(json.dumps(r) for r in results) + "\n```\n")
    out = Path(args.out)
    if out.exists() and NOTES in out.read_text():  # hand-written notes below the marker survive
        text += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
    out.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
