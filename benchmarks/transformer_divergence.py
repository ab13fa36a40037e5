"""How far apart the PC transformer and its backprop twin drift, against how far a
1e-7 nudge of the initial weights drifts the PC model from itself.

Usage: python -m benchmarks.transformer_divergence [--steps 120]
                                                   [--data_dir ../shared/data/tinyshakespeare]

Both models are built from configs/shakespeare_transformer.yaml (float32, seed 0, the
config's AdamW at a constant learning rate) and stepped on the same random windows of the
corpus: the PC model by its local rules (one sweep, errors on arrival), the twin by
autograd. Prints the relative distance ||w_a - w_b|| / ||w_a|| of all weights after
some steps. If the PC model's updates are the twin's gradients (the float64 tests say
they are, exactly), the two part only by float rounding, which training then amplifies
as it amplifies any other perturbation: the PC-twin distance should grow like the
nudged one's, not from a larger first step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from pcn_lightning import Inference, Learning, TransformerPCNModule, TransformerTwin

REPO = Path(__file__).resolve().parents[1]


def build(cls, cfg: dict, vocab_size: int, nudge: float = 0.0):
    torch.manual_seed(0)
    learning = Learning(**{**cfg["learning"], "lr_scheduler": None, "adam_betas": tuple(cfg["learning"]["adam_betas"])})
    extra = {"inference": Inference(**cfg["inference"])} if cls is TransformerPCNModule else {}
    model = cls(layers=cfg["layers"], context=cfg["context"], output_dim=vocab_size, label_precision=cfg["label_precision"],
                learning=learning, **extra)
    if nudge:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + nudge * torch.randn(p.shape, generator=g))
    opt = model.configure_optimizers()
    return model, opt["optimizer"] if isinstance(opt, dict) else opt


def train_step(model, opt, x, y) -> None:
    opt.zero_grad()
    if isinstance(model, TransformerPCNModule):
        with torch.no_grad():  # the local rules' summed gradients, as training_step averages them
            for p, g in model.local_gradients(x, y):
                p.grad = g / y.numel()
    else:
        F.cross_entropy(model.logits(x).flatten(0, 1), y.flatten()).backward()
    opt.step()


def distance(a, b) -> float:
    wa = torch.cat([p.detach().flatten() for p in a.parameters()])
    wb = torch.cat([p.detach().flatten() for p in b.parameters()])
    return ((wa - wb).norm() / wa.norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--data_dir", default=str(REPO.parent / "shared/data/tinyshakespeare"))
    args = ap.parse_args()
    cfg = yaml.safe_load((REPO / "configs/shakespeare_transformer.yaml").read_text())["model"]["init_args"]
    text = (Path(args.data_dir) / "input.txt").read_text()
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text[:200_000]])
    v = len(vocab)
    pc, twin, nudged = build(TransformerPCNModule, cfg, v), build(TransformerTwin, cfg, v), build(TransformerPCNModule, cfg, v, 1e-7)
    print(f"start: PC-twin {distance(pc[0], twin[0]):.2e}, PC-nudged PC {distance(pc[0], nudged[0]):.2e}")
    g, n = torch.Generator().manual_seed(0), cfg["context"]
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(ids) - n - 1, (32,), generator=g)
        windows = torch.stack([ids[s:s + n + 1] for s in starts])
        for model, opt in (pc, twin, nudged):
            train_step(model, opt, windows[:, :-1], windows[:, 1:])
        if step in (1, 2, 5, 10, 20, 40, 80, 120) or step == args.steps:
            print(f"step {step:4d}: PC-twin {distance(pc[0], twin[0]):.2e}, "
                  f"PC-nudged PC {distance(pc[0], nudged[0]):.2e}", flush=True)


if __name__ == "__main__":
    main()
