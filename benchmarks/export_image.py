"""Save the last image a run logged to TensorBoard under a tag as a PNG (for docs/).

Usage: python -m benchmarks.export_image RUN_DIR TAG OUT.png
       e.g. RUN_DIR logs/fashion_mnist_seed_deep/version_0, TAG diagnostics/layer_error_heatmap
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def last_image(run_dir: str, tag: str) -> bytes:
    ea = EventAccumulator(run_dir, size_guidance={"images": 0})
    ea.Reload()
    tags = ea.Tags()["images"]
    if tag not in tags:
        raise SystemExit(f"error: {run_dir} logged no image {tag!r}; it has {sorted(tags)}")
    return ea.Images(tag)[-1].encoded_image_string


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("tag")
    ap.add_argument("out")
    args = ap.parse_args()
    Path(args.out).write_bytes(last_image(args.run_dir, args.tag))
    print(args.out)


if __name__ == "__main__":
    main()
