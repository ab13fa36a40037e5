"""How recognizable are the generative model's samples? ("every classifier is a generator")

Usage: python -m benchmarks.generation --generator GEN.ckpt --classifier CLS.ckpt
           [--per_class 100] [--noise_std 0.5] [--grid docs/generated_samples.png]

For each class the generative PCN clamps its top latent to that class and runs the
predictions down to pixels (`PCNModule.generate`); an independently trained
classifier (the backprop twin of configs/fashion_mnist.yaml, say) then labels the
samples. Reports, per class, the share it assigns to the intended class, and saves
a grid (one row per class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from benchmarks._timing import table
from callbacks.class_samples import to_images
from pcn_lightning.checkpoints import load_module

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--twin", action="store_true", help="the classifier checkpoint is a BackpropTwin")
    ap.add_argument("--per_class", type=int, default=100)
    ap.add_argument("--noise_std", type=float, default=0.5)
    ap.add_argument("--grid", default=None)
    ap.add_argument("--prototypes", action="store_true",
                    help="clamp the top to each class's mean settled top latent (5,000 training images)")
    args = ap.parse_args()
    gen = load_module(args.generator, ("PCNModule",), flag="--generator")  # weights-only
    clf = load_module(args.classifier, ("BackpropTwin",) if args.twin else ("PCNModule",), flag="--classifier")
    C = gen.net.num_classes
    labels = torch.arange(C).repeat_interleave(args.per_class)
    protos = None
    if args.prototypes:
        from pcn_lightning.data import PCNDataModule
        dm = PCNDataModule("fashion_mnist", batch_size=1000)
        dm.setup("fit")
        xt, yt = dm.train_set.tensors
        protos = gen.class_prototypes(xt[:5000], yt[:5000])
    x = gen.generate(labels, args.noise_std, torch.Generator().manual_seed(0), protos).clamp(0, 1)
    pred = clf.predict_logits(x).argmax(1)
    rows, hits = [], []
    for c in range(C):
        share = (pred[labels == c] == c).float().mean().item()
        hits.append(share)
        rows.append([f"{c} {FASHION[c] if C == 10 else ''}", f"{share * 100:.0f}"])
    rows.append(["all", f"{sum(hits) / C * 100:.1f}"])
    print(f"{args.per_class} samples per class, noise_std={args.noise_std}; classifier: {args.classifier}")
    print(table(rows, ["class", "% recognized as that class"]))
    if args.grid:
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        n = 8
        pick = torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in range(C)])
        save_image(to_images(x[pick], None), args.grid, nrow=n, padding=1, pad_value=1.0)
        print(f"grid saved to {args.grid}")


if __name__ == "__main__":
    main()
