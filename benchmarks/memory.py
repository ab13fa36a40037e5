"""Peak memory of one training step against its floor.

Usage: python -m benchmarks.memory [--dims 3072 1000 500 10] [--batch 500] [--T 50]
       python -m benchmarks.memory --config cifar100_vgg5 [--batch 128] [--device cuda]

With --config, a shipped config's PC step and its backprop twin's step, each in a
fresh process on random data of the dataset's shape: their peak memory growth
side by side (the weights already resident in both).

The floor: the weights, the latents, the errors (eps and h of every layer) and one
set of temporaries of the largest layer, in float32; the optimizer's state
(grads, and 2 moments for Adam) is listed apart. On CPU the step runs in a fresh
process and its peak resident memory growth is measured (ru_maxrss); on CUDA,
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks._timing import table

CHILD = r"""
import json, resource, sys, torch
from pcn_lightning import PCNModule
a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
m = PCNModule.from_flat(dims=a["dims"], output_dim=a["classes"], T_infer=a["T"], eta_learn=0.005, optimizer=a["opt"]).to(dev)
opt = m.configure_optimizers(); m.optimizers = lambda: opt; m.log = lambda *x, **k: None
x = torch.rand(a["batch"], a["dims"][0], device=dev); y = torch.randint(0, a["classes"], (a["batch"],), device=dev)
m.settle_batch(x[:2], y[:2])  # page in the code paths on a tiny batch
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
m.training_step((x, y), 0)  # includes the optimizer state created on the first step
if dev.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"step_extra_bytes": peak}))
"""


CONFIG_CHILD = r"""
import json, resource, sys, torch
from benchmarks.speed import batch, modules
a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
pc, bp, B, dataset = modules(a["config"], 0)
m = (pc if a["which"] == "pc" else bp).to(dev)
x, y = batch(dataset, a["batch"] or B, [])
x, y = x.to(dev), y.to(dev)
opt = m.configure_optimizers()
opt = opt["optimizer"] if isinstance(opt, dict) else opt
m.optimizers, m.log = (lambda: opt), (lambda *k, **kw: None)

def step(xb, yb):
    if a["which"] == "pc":
        m.training_step((xb, yb), 0)
    else:
        opt.zero_grad()
        m.training_step((xb, yb), 0).backward()
        opt.step()

step(x[:2], y[:2])  # page in the code paths (and create the optimizer state) on a tiny batch
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
step(x, y)
if dev.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
params = sum(p.numel() * p.element_size() for p in m.parameters())
print(json.dumps({"step_extra_bytes": peak, "param_bytes": params, "batch": x.shape[0]}))
"""


def compare_config(config: str, batch: int, device: str) -> None:
    """Peak memory growth of one PC step and one twin step of a shipped config."""
    out = {}
    for which in ("pc", "bp"):
        arg = json.dumps({"config": config, "which": which, "batch": batch, "device": device})
        r = subprocess.run([sys.executable, "-c", CONFIG_CHILD, arg], capture_output=True, text=True, check=True)
        out[which] = json.loads(r.stdout.strip().splitlines()[-1])
    pc, bp = out["pc"]["step_extra_bytes"], out["bp"]["step_extra_bytes"]
    if min(pc, bp) <= 0:  # ru_maxrss is a high-water mark: a step below what loading reached shows no growth
        raise SystemExit(f"{config}: a step's growth is below what the CPU's peak-RSS measure resolves "
                         f"(PC {pc} B, twin {bp} B); measure a larger batch (--batch) or on CUDA")
    print(f"config={config} batch={out['pc']['batch']} device={device} weights {out['pc']['param_bytes'] / 2**20:.1f} MiB")
    print(table([["PC step (extra peak)", f"{pc / 2**20:.1f}"], ["backprop twin step (extra peak)", f"{bp / 2**20:.1f}"],
                 ["PC / twin", f"{pc / bp:.2f}"]], ["", "MiB"]))
    print(json.dumps({"config": config, "pc_bytes": pc, "bp_bytes": bp, "ratio": pc / bp}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[3072, 1000, 500, 10])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--opt", default="sgd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", default=None, help="a shipped config's PC step beside its twin's (e.g. cifar100_vgg5)")
    args = ap.parse_args()
    if args.config:
        return compare_config(args.config, args.batch if args.batch != 500 else 0, args.device)
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(vars(args))], capture_output=True, text=True, check=True)
    extra = json.loads(r.stdout.strip().splitlines()[-1])["step_extra_bytes"]
    d, B, C = args.dims, args.batch, args.classes
    params = sum(a * b for a, b in zip(d[:-1], d[1:])) + C * d[-1]
    latents = B * sum(d) + B * C
    errors = 3 * B * sum(d[:-1]) + B * C  # a, eps, h per predicted layer; eps_y
    temps = B * max(d)
    f32 = 4
    rows = [
        ["weights", f"{params * f32 / 2**20:.1f}"],
        ["latents", f"{latents * f32 / 2**20:.1f}"],
        ["errors (a, eps, h)", f"{errors * f32 / 2**20:.1f}"],
        ["one set of temporaries", f"{temps * f32 / 2**20:.1f}"],
        ["floor (sum of the above)", f"{(params + latents + errors + temps) * f32 / 2**20:.1f}"],
        [f"optimizer state ({args.opt}: grads{' + 2 moments' if args.opt != 'sgd' else ''})",
         f"{params * f32 * (3 if args.opt != 'sgd' else 1) / 2**20:.1f}"],
        ["measured: extra peak during a training step", f"{extra / 2**20:.1f}"],
    ]
    opt_state = params * f32 * (3 if args.opt != "sgd" else 1)
    transient = (latents + errors + temps) * f32 + opt_state
    print(f"dims={d} B={B} T={args.T} device={args.device}")
    print(table(rows, ["", "MiB"]))
    print(f"ratio measured / floor (latents + errors + temporaries + optimizer state, the weights "
          f"already resident): {extra / transient:.2f}")


if __name__ == "__main__":
    main()
