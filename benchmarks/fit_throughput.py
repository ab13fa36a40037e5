"""Trainer.fit throughput against a bare Python loop calling the same training_step.

Usage: python -m benchmarks.fit_throughput [--batches 100] [--batch 128] [--T 20]

Both sides run the discriminative Fashion-MNIST model on the same batches; the
bare loop has no Lightning at all (no logging, no progress bar, no hooks). The
ratio says what Lightning costs. Two readings: steady-state throughput (the
clock runs from the start of batch `--warmup` to the end of the last batch, on
both sides) and end to end (from the call to the return: Trainer start-up, the
dataloader's first batch and the first steps included).
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from benchmarks._timing import table
from pcn_lightning import PCNModule
from pcn_lightning.data import PCNDataModule


def make_module(args):
    torch.manual_seed(0)
    return PCNModule.from_flat(dims=[784, 512, 256], output_dim=10, direction="discriminative", latent_init="feedforward",
                               T_infer=args.T, eta_infer=0.1, eta_learn=2e-4, optimizer="adam")


class SteadyClock(L.Callback):
    """Starts the clock when batch `warmup` starts; stops it when the last batch ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def run_fit(args, dm) -> tuple[float, float]:
    m = make_module(args)
    clock = SteadyClock(args.warmup)
    trainer = L.Trainer(max_steps=args.batches, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=args.progress_bar, enable_model_summary=False, accelerator="cpu",
                        log_every_n_steps=50, callbacks=[clock])
    t0 = time.perf_counter()
    trainer.fit(m, dm.train_dataloader())
    total = time.perf_counter() - t0
    return (args.batches - args.warmup) * args.batch / (clock.end - clock.start), args.batches * args.batch / total


def run_bare(args, dm) -> tuple[float, float]:
    m = make_module(args)
    opt = m.configure_optimizers()
    m.optimizers = lambda: opt
    m.log = lambda *a, **k: None
    t0 = time.perf_counter()
    start = None
    for i, batch in enumerate(dm.train_dataloader()):
        if i == args.batches:
            break
        if i == args.warmup:
            start = time.perf_counter()
        m.training_step(batch, i)
    end = time.perf_counter()
    return (args.batches - args.warmup) * args.batch / (end - start), args.batches * args.batch / (end - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20, help="batches before the steady-state clock starts")
    ap.add_argument("--progress_bar", action="store_true")
    args = ap.parse_args()
    dm = PCNDataModule("fashion_mnist", batch_size=args.batch)
    dm.setup("fit")
    fit, bare = [], []
    for _ in range(args.repeats):  # alternate, so that machine noise hits both
        bare.append(run_bare(args, dm))
        fit.append(run_fit(args, dm))
    med = lambda rows, k: sorted(r[k] for r in rows)[len(rows) // 2]
    print(f"{args.batches} batches of {args.batch}, T={args.T}, threads={torch.get_num_threads()}, median of {args.repeats}")
    rows = []
    for k, what in ((0, f"steady state (batches {args.warmup}..{args.batches})"), (1, "end to end (start-up included)")):
        f, b = med(fit, k), med(bare, k)
        rows += [[what, "Trainer.fit", f"{f:.0f}", f"{f / b:.3f}"], [what, "bare loop", f"{b:.0f}", "1.000"]]
    print(table(rows, ["timing", "", "samples/s", "ratio (target >= 0.95)"]))

if __name__ == "__main__":
    main()
