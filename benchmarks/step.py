"""One inference step and one training step against their matrix-product floor.

Usage: python benchmarks/step.py [--dims 3072 1000 500 10] [--batch 500] [--T 50] [--device cpu]

The floor of one inference step is, per layer, one x(l+1) @ W(l).T and one
h(l) @ W(l): 4 * B * sum(d_l d_{l+1}) flops. Everything else (activations,
errors, bookkeeping, Python) is overhead; the ratio step/floor says how much.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._timing import interleaved, table
from pcn_lightning import PCNModule
from pcn_lightning import equations as eq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[3072, 1000, 500, 10])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--activations", default="relu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    m = PCNModule(dims=args.dims, output_dim=args.classes, activations=args.activations,
                  T_infer=args.T, eta_infer=0.05, eta_learn=0.005).to(dev)
    B = args.batch
    x = torch.rand(B, args.dims[0], device=dev)
    y = torch.randint(0, args.classes, (B,), device=dev)
    Y = torch.nn.functional.one_hot(y, args.classes).float()
    weights, acts, readout = m.net.chain()
    with torch.no_grad():
        xs, free = m.net.initial_state(x, Y, generator=torch.Generator().manual_seed(0))
        errors = eq.prediction_errors(xs, weights, acts, readout, Y)
    # the bare products of one inference step, on buffers of the same shapes
    ups = [xs[l + 1] for l in range(len(weights))]
    hs = [e.clone() for e in errors.h]

    def floor_step():
        for W, u, h in zip(weights, ups, hs):
            u @ W.T
            h @ W

    def inference_step():
        nonlocal errors
        eq.inference_step(xs, weights, errors, free, 1e-4, readout)
        errors = eq.prediction_errors(xs, weights, acts, readout, Y)

    cstep = eq.compiled_settle_step()
    state = {"xs": [t.clone() for t in xs], "errors": None}
    with torch.no_grad():
        state["errors"] = eq.prediction_errors(state["xs"], weights, acts, readout, Y)

    def compiled_step():  # the same step through torch.compile (compile_settle: true)
        state["xs"], state["errors"] = cstep(state["xs"], weights, acts, free, 1e-4, state["errors"], readout, Y)

    opt = m.configure_optimizers()
    m.optimizers = lambda: opt
    m.log = lambda *a, **k: None

    def training_step():
        m.training_step((x, y), 0)

    def floor_train():
        for _ in range(args.T):
            floor_step()
        for W, u, h in zip(weights, ups, hs):  # the Hebbian products
            h.T @ u
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled_step()
        compile_s = time.perf_counter() - t0
        t = interleaved({"floor_step": floor_step, "inference_step": inference_step, "compiled_step": compiled_step},
                        repeats=args.repeats, sync=sync)
        t2 = interleaved({"floor_train": floor_train, "training_step": training_step}, repeats=max(3, args.repeats // 5), warmup=1, sync=sync)
    flops = 4 * B * sum(a * b for a, b in zip(args.dims[:-1], args.dims[1:]))
    rows = [
        ["inference step", f"{t['inference_step'] * 1e3:.2f}", f"{t['floor_step'] * 1e3:.2f}", f"{t['inference_step'] / t['floor_step']:.3f}", "<= 1.15"],
        ["inference step, compile_settle", f"{t['compiled_step'] * 1e3:.2f}", f"{t['floor_step'] * 1e3:.2f}", f"{t['compiled_step'] / t['floor_step']:.3f}", "(option)"],
        [f"training step (T={args.T} + learning)", f"{t2['training_step'] * 1e3:.1f}", f"{t2['floor_train'] * 1e3:.1f}", f"{t2['training_step'] / t2['floor_train']:.3f}", "<= 1.2"],
    ]
    print(f"dims={args.dims} B={B} device={dev} threads={torch.get_num_threads()} "
          f"floor products: {flops / t['floor_step'] / 1e9:.1f} GFLOP/s; torch.compile took {compile_s:.1f} s (excluded)")
    print(table(rows, ["what", "ms", "floor ms", "ratio", "target"]))


if __name__ == "__main__":
    main()
