"""Where the time of one PC training step goes, phase by phase, beside its twin's step.

Usage: python -m benchmarks.profile_step [--config cifar100_vgg5] [--steps 5] [--weight_errors settled]

The phases of `PCNModule.training_step` (one sequential sweep learning from errors on
arrival, or a settle learning from the settled errors): the feedforward sweep that
sets the latents (`initial_state`), the settle (its own time, less the weight
gradients taken inside it), the weight gradients (`Term.weight_grads`, inside the
settle on arrival, after it otherwise), handing them to the optimizer (the gradient
copy, and the DDP all-reduce when there is one), the optimizer's step, and the rest
(guard, logs). Timed with wall clocks around each call, on random data of the
dataset's shape (`benchmarks.speed.modules`); the twin's whole step beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch

from benchmarks._timing import table
from benchmarks.speed import batch, modules, steppable
from pcn_lightning import module, step, terms
from pcn_lightning.network import PCNetwork

PHASES = ["feedforward sweep (initial_state)", "settle (less the weight gradients)", "weight gradients",
          "gradients to the optimizer", "optimizer step", "the rest (guard, logs)"]


class Clock:
    """Sums the wall time of patched calls per phase (nested calls subtract from their parent)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []

    def wrap(self, owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            self.stack.append([phase, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                ph, t0, inner = self.stack.pop()
                dt = time.perf_counter() - t0
                self.totals[ph] += dt - inner
                if self.stack:
                    self.stack[-1][2] += dt
        setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="cifar100_vgg5")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--weight_errors", default=None, help="override the config's (settled, on_arrival)")
    ap.add_argument("--T", type=int, default=0, help="override the config's T_infer (0: its own)")
    ap.add_argument("--schedule", default=None)
    ap.add_argument("--eta_infer", type=float, default=None)
    args = ap.parse_args()
    pc, bp, B, dataset = modules(args.config, args.T, args.schedule, args.eta_infer, args.weight_errors)
    x, y = batch(dataset, B, [])
    opt, bopt = steppable(pc, bp)

    clock = Clock()
    clock.wrap(PCNetwork, "initial_state", PHASES[0])
    clock.wrap(module, "settle", PHASES[1])  # the name the module calls
    clock.wrap(terms.Term, "weight_grads", PHASES[2])
    clock.wrap(step, "set_gradients", PHASES[3])
    clock.wrap(opt, "step", PHASES[4])  # this optimizer only (the twin's may be of its class)

    def bp_step():
        bopt.zero_grad()
        bp.training_step((x, y), 0).backward()
        bopt.step()

    for _ in range(2):  # warm-up
        pc.training_step((x, y), 0)
        bp_step()
    clock.totals.clear()
    pc_times, bp_times = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        pc.training_step((x, y), 0)
        pc_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bp_step()
        bp_times.append(time.perf_counter() - t0)
    pc_total, bp_total = sum(pc_times), sum(bp_times)
    measured = {ph: clock.totals.get(ph, 0.0) for ph in PHASES[:-1]}
    measured[PHASES[-1]] = pc_total - sum(measured.values())
    rows = [[ph, f"{1e3 * t / args.steps:.1f}", f"{100 * t / pc_total:.1f}"] for ph, t in measured.items()]
    rows.append(["PC step (median of the steps)", f"{1e3 * statistics.median(pc_times):.1f}", "100"])
    rows.append(["backprop twin's step (median, alternated)", f"{1e3 * statistics.median(bp_times):.1f}",
                 f"{100 * bp_total / pc_total:.1f}"])
    print(f"config={args.config} batch={B} T={pc.inference.T_infer} schedule={pc.inference.schedule} "
          f"weight_errors={pc.learning.weight_errors} threads={torch.get_num_threads()} steps={args.steps}")
    print(table(rows, ["phase", "ms per step", "% of the PC step"]))
    print(json.dumps({"config": args.config, "weight_errors": pc.learning.weight_errors, "T": pc.inference.T_infer,
                      "phases_ms": {k: 1e3 * v / args.steps for k, v in measured.items()},
                      "pc_ms": 1e3 * statistics.median(pc_times), "bp_ms": 1e3 * statistics.median(bp_times)}))


if __name__ == "__main__":
    main()
