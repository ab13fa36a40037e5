"""One inference step and one training step against their matrix-product floor.

Usage: python -m benchmarks.step [--dims 3072 1000 500 10] [--batch 500] [--T 50] [--device cpu]

The floor of one inference step is, per dense term, one x_source @ W.T and one
h @ W: 4 * B * sum(d_l d_{l+1}) flops. Everything else (activations, errors,
bookkeeping, Python) is overhead; the ratio step/floor says how much. Timed side by
side: the reference step (fresh tensors, as the math reads), the buffered in-place
step that `settle` runs, and the same through torch.compile (compile_settle).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._timing import interleaved, table
from pcn_lightning import PCNModule
from pcn_lightning.inference import ErrorBuffers, compiled_step, reference_step, step_in_place


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
    m = PCNModule.from_flat(dims=args.dims, output_dim=args.classes, activations=args.activations,
                            T_infer=args.T, eta_infer=0.05, eta_learn=0.005).to(dev)
    net, B = m.net, args.batch
    x = torch.rand(B, args.dims[0], device=dev)
    y = torch.randint(0, args.classes, (B,), device=dev)
    Y = torch.nn.functional.one_hot(y, args.classes).float()
    with torch.no_grad():
        xs, free, _ = net.initial_state(x, Y, generator=torch.Generator().manual_seed(0))
        active = net.active_terms(free)
        buffers = ErrorBuffers(net, xs, free, active)
        errors = buffers.update(xs, first=True)
    # the bare products of one inference step, on tensors of the same shapes
    products = [(t.map.weight, xs[t.source].clone(), e.h.clone()) for t, e in zip(net.terms, errors)]

    def floor_step():
        for W, u, h in products:
            u @ W.T
            h @ W

    def inference_step():  # what settle runs: in place, into the buffers
        step_in_place(net, xs, free, 1e-4, errors)
        buffers.update(xs)

    plain = {"xs": [t.clone() for t in xs]}

    def reference():  # the step as the math reads, fresh tensors
        plain["xs"], _ = reference_step(net, plain["xs"], free, 1e-4, active)

    cstep = compiled_step()
    state = {"xs": [t.clone() for t in xs]}
    state["errors"] = net.errors(state["xs"], active)

    def compiled():
        state["xs"], state["errors"] = cstep(net, state["xs"], state["errors"], free, 1e-4, active)

    opt = m.configure_optimizers()
    m.optimizers = lambda: opt
    m.log = lambda *a, **k: None

    def training_step():
        m.training_step((x, y), 0)

    def floor_train():
        for _ in range(args.T):
            floor_step()
        for W, u, h in products:  # the Hebbian products
            h.T @ u

    with torch.no_grad():
        t0 = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - t0
        t = interleaved({"floor_step": floor_step, "inference_step": inference_step, "reference_step": reference,
                         "compiled_step": compiled}, repeats=args.repeats, sync=sync)
        t2 = interleaved({"floor_train": floor_train, "training_step": training_step},
                         repeats=max(3, args.repeats // 5), warmup=1, sync=sync)
    flops = 4 * B * sum(a * b for a, b in zip(args.dims[:-1], args.dims[1:]))
    ratio = lambda k, f="floor_step": f"{t[k] / t[f]:.3f}"
    rows = [
        ["inference step (settle: buffered, in place)", f"{t['inference_step'] * 1e3:.2f}", f"{t['floor_step'] * 1e3:.2f}", ratio("inference_step"), "<= 1.15"],
        ["inference step, reference (fresh tensors)", f"{t['reference_step'] * 1e3:.2f}", f"{t['floor_step'] * 1e3:.2f}", ratio("reference_step"), ""],
        ["inference step, compile_settle", f"{t['compiled_step'] * 1e3:.2f}", f"{t['floor_step'] * 1e3:.2f}", ratio("compiled_step"), "(option)"],
        [f"training step (T={args.T} + learning)", f"{t2['training_step'] * 1e3:.1f}", f"{t2['floor_train'] * 1e3:.1f}",
         f"{t2['training_step'] / t2['floor_train']:.3f}", "<= 1.2"],
    ]
    print(f"dims={args.dims} B={B} device={dev} threads={torch.get_num_threads()} "
          f"floor products: {flops / t['floor_step'] / 1e9:.1f} GFLOP/s; torch.compile took {compile_s:.1f} s (excluded)")
    print(table(rows, ["what", "ms", "floor ms", "ratio", "target"]))


if __name__ == "__main__":
    main()
