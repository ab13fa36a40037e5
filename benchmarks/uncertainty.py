"""Calibration and out-of-distribution detection: PCNs beside their backprop twins.

Usage:
    python -m benchmarks.accuracy --runs pcn_discriminative_precision twin_discriminative ... --workdir W
    python -m benchmarks.uncertainty --workdir W [--out benchmarks/UNCERTAINTY.md] [--figures docs]

Reads the best checkpoint (by validation accuracy) of every run in W and evaluates
it on the Fashion-MNIST test split, label-free:

- calibration: top-1 expected calibration error (15 equal-width bins) of the class
  probabilities (a PCN: softmax(pi * prediction), pi the learned precision of its
  label-free prediction; the squared-error twin: the same with its fitted pi; the
  cross-entropy twin: softmax), and a reliability diagram per model;
- out of distribution, AUROC (1.0: every shifted image scores above every test
  image) of (a) the per-sample settled energy (PCNs; label-free, so 0 for a
  discriminative PCN, which explains any input exactly without a label), (b) the
  committed energy (PCNs: settled with the network's own top class clamped) and
  (c) one minus the largest class probability, for the test images flipped upside down, inverted (1 - x),
  uniform noise, and, for the runs trained on classes 0-7 only, classes 8 and 9.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks._timing import table
from pcn_lightning import PCNModule
from pcn_lightning.checkpoints import load_module
from pcn_lightning.calibration import auroc, expected_calibration_error, reliability_figure
from pcn_lightning.data import PCNDataModule

REPO = Path(__file__).resolve().parents[1]


def best_checkpoint(run_dir: Path) -> Path:
    version = sorted(run_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    return next((version / "checkpoints").glob("best-*.ckpt"))


def load(ckpt: Path):
    return load_module(ckpt, ("PCNModule", "BackpropTwin")).eval()  # weights-only


@torch.no_grad()
def outputs(model, x: torch.Tensor, batch: int = 1000) -> dict:
    """probs, logits and (PCNs) the settled energy of every sample."""
    out = {"probs": [], "logits": [], "energy": [], "committed": []}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if isinstance(model, PCNModule):
            o = model.predict_uncertainty(xb)
            out["energy"].append(o["energy"])
            out["committed"].append(o["committed_energy"])
        else:
            o = {"logits": model.predict_logits(xb)}
            o["probs"] = model.class_probabilities(o["logits"])
        out["probs"].append(o["probs"])
        out["logits"].append(o["logits"])
    return {k: torch.cat(v) if v else None for k, v in out.items()}


def shifts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    img = x.reshape(-1, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    return {"flipped": img.flip(2).reshape(x.shape), "inverted": 1 - x,
            "uniform noise": torch.rand(x.shape, generator=g)}


def evaluate(name: str, run_dir: Path, x, y, figures: Path | None) -> dict:
    model = load(best_checkpoint(run_dir))
    eight = "8cls" in name
    keep = y < 8 if eight else torch.ones_like(y, dtype=torch.bool)
    o = outputs(model, x[keep])
    res = {"run": name, "test_top1": (o["probs"].argmax(1) == y[keep]).double().mean().item(),
           "ece": expected_calibration_error(o["probs"], y[keep])}
    if isinstance(model, PCNModule):
        res["predictive_precision"] = model.predictive_log_precision.exp().item()
        res["precisions"] = {t.name: float(torch.as_tensor(t.pi).mean()) for t in model.net.terms}
    if figures is not None and not eight:
        fig = reliability_figure(o["probs"], y[keep], 15, name)
        fig.savefig(figures / f"reliability_{name}.png")
    shifted = {f"class 8-9": x[~keep]} if eight else shifts(x[keep])
    for shift, xs in shifted.items():
        so = outputs(model, xs)
        res[f"auroc_maxprob/{shift}"] = auroc(1 - o["probs"].max(1).values, 1 - so["probs"].max(1).values)
        if o["energy"] is not None:
            res[f"auroc_energy/{shift}"] = auroc(o["energy"], so["energy"])
            res[f"auroc_committed/{shift}"] = auroc(o["committed"], so["committed"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "UNCERTAINTY.md"))
    ap.add_argument("--figures", default=str(REPO / "docs"))
    ap.add_argument("--runs", nargs="*", default=None, help="run folder names (default: every run in workdir)")
    args = ap.parse_args()
    dm = PCNDataModule("fashion_mnist", batch_size=1000)
    dm.setup("test")
    x, y = dm.test_set.tensors
    work = Path(args.workdir)
    names = args.runs or sorted(p.name for p in work.iterdir() if p.is_dir())
    figures = Path(args.figures) if args.figures else None
    results = []
    for name in names:
        r = evaluate(name, work / name, x, y, figures)
        print(json.dumps(r), flush=True)
        results.append(r)
    shifts_seen = sorted({k.split("/", 1)[1] for r in results for k in r if k.startswith("auroc_")})
    header = ["run", "test top-1 %", "ECE"] + [f"AUROC {s}: energy / committed / max-prob" for s in shifts_seen]
    rows = []
    for r in results:
        row = [r["run"], f"{100 * r['test_top1']:.2f}", f"{r['ece']:.4f}"]
        for s in shifts_seen:
            e, c, m = (r.get(f"auroc_{k}/{s}") for k in ("energy", "committed", "maxprob"))
            row.append("-" if m is None else " / ".join("-" if v is None else f"{v:.3f}" for v in (e, c, m)))
        rows.append(row)
    text = (f"# Calibration and out-of-distribution detection\n\nMeasured by `python -m benchmarks.uncertainty` "
            f"({time.strftime('%Y-%m-%d')}), Fashion-MNIST test split, label-free, best checkpoint by validation, "
            "one seed each.\n\n" + table(rows, header) + "\n\nRaw:\n\n```\n" + "\n".join(json.dumps(r) for r in results) + "\n```\n")
    Path(args.out).write_text(text)
    print(table(rows, header))


if __name__ == "__main__":
    main()
