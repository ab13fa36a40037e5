"""What a finished `train.py` run measured, read from its TensorBoard log: one row a run.

Usage: python -m benchmarks.run_report RUN_DIR [RUN_DIR ...] [--json]

RUN_DIR is a run's `--trainer.default_root_dir` (or any folder above its
`version_N/`): the last version found under it is read. Printed: the model class,
epochs trained, validation top-1 per epoch, the best of them (the checkpoint the
test used), the test top-1 and top-5 (label-free, that checkpoint), the median
epoch time (`time/epoch_s`, training batches only) and the run's wall time from
its first to its last logged event. Rows for benchmarks/CIFAR.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def latest_version(root: Path) -> Path:
    versions = sorted((p.parent for p in Path(root).rglob("events.out.tfevents.*")),
                      key=lambda p: p.stat().st_mtime)
    if not versions:
        raise SystemExit(f"{root}: no TensorBoard log found under it")
    return versions[-1]


def report(root: Path) -> dict:
    run = latest_version(root)
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    get = lambda t: [e.value for e in ea.Scalars(t)] if t in tags else []
    walls = [e.wall_time for t in tags for e in ea.Scalars(t)]
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    model = str(config.get("model", {}).get("class_path", "?")).rsplit(".", 1)[-1]
    val = get("val/acc_top1")
    return {
        "run": str(run), "model": model, "epochs": len(get("time/epoch_s")),
        "val_top1": [round(v, 4) for v in val], "best_val_top1": max(val) if val else None,
        "test_top1": (get("test/acc_top1") or [None])[-1], "test_top5": (get("test/acc_top5") or [None])[-1],
        "epoch_s_median": statistics.median(get("time/epoch_s")) if get("time/epoch_s") else None,
        "wall_min": (max(walls) - min(walls)) / 60 if walls else None,
    }


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [report(r) for r in args.runs]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| run | model | epochs | best val top-1 % | test top-1 % | test top-5 % | epoch s (median) | wall min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ep = "-" if r["epoch_s_median"] is None else f"{r['epoch_s_median']:.0f}"
        wall = "-" if r["wall_min"] is None else f"{r['wall_min']:.1f}"
        print(f"| {r['run']} | {r['model']} | {r['epochs']} | {pct(r['best_val_top1'])} | {pct(r['test_top1'])} | "
              f"{pct(r['test_top5'])} | {ep} | {wall} |")
        print(f"|  val top-1 per epoch: {', '.join(pct(v) for v in r['val_top1'])} |||||||")


if __name__ == "__main__":
    main()
