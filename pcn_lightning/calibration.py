"""Calibration and out-of-distribution scores, as pure functions.

- `expected_calibration_error`: top-1 ECE over equal-width confidence bins: the
  bin-size-weighted mean gap between accuracy and mean confidence.
- `reliability`: the per-bin accuracy, confidence and count (the reliability diagram).
- `auroc`: area under the ROC curve of a score that should be higher out of
  distribution than in it (the probability that a random OOD sample outscores a
  random in-distribution one, ties counting half).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def reliability(probs: Tensor, labels: Tensor, bins: int = 15) -> dict:
    """Per equal-width bin of top-1 confidence: count, accuracy, mean confidence."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf.double(), edges[1:-1], right=False)  # bins (lo, hi], as Guo et al. 2017
    count = torch.bincount(idx, minlength=bins).double()
    acc = torch.bincount(idx, weights=correct, minlength=bins) / count.clamp_min(1)
    mean_conf = torch.bincount(idx, weights=conf.double(), minlength=bins) / count.clamp_min(1)
    return {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf}


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """sum_b |B_b| / n * |acc(B_b) - conf(B_b)|, top-1, equal-width bins."""
    r = reliability(probs, labels, bins)
    n = r["count"].sum()
    return float((r["count"] / n * (r["accuracy"] - r["confidence"]).abs()).sum())


def auroc(score_in: Tensor, score_out: Tensor) -> float:
    """P(score_out > score_in) + 1/2 P(equal), by ranks (Mann-Whitney U)."""
    s = torch.cat([score_in.double().flatten(), score_out.double().flatten()])
    order = torch.argsort(s, stable=True)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # average the ranks of ties
    uniq, inverse = torch.unique(s, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(s))
    ranks = (sums / counts)[inverse]
    n_in, n_out = score_in.numel(), score_out.numel()
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


def reliability_figure(probs: Tensor, labels: Tensor, bins: int = 15, title: str = ""):
    """The reliability diagram: accuracy per confidence bin against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = reliability(probs, labels, bins)
    ece = expected_calibration_error(probs, labels, bins)
    centers = ((r["edges"][:-1] + r["edges"][1:]) / 2).numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=80)
    filled = r["count"].numpy() > 0
    ax.bar(centers[filled], r["accuracy"].numpy()[filled], width=1 / bins, edgecolor="k", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.plot(r["confidence"].numpy()[filled], r["accuracy"].numpy()[filled], "ko", ms=3, label="(confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} ECE {ece:.3f}".strip(), fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
