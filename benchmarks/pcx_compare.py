"""Our training step against PCX's (JAX): the same network, batch and T.

Usage: python -m benchmarks.pcx_compare [--batch 128] [--T 20] [--steps 30]
       python -m benchmarks.pcx_compare --model vgg5 [--batch 128] [--T 7] [--steps 30]

--model mlp (default): the MLP `--dims` on Fashion-MNIST (PCX side: pcx_step.py).
--model vgg5: PCX's VGG-5 (its benchmark paper's: four blocks conv 3x3 with bias ->
exact GELU -> max-pool 2 -> latent, channels 128, 256, 512, 512, then flatten ->
dense with bias -> the label) on CIFAR-shaped synthetic data, 3x32x32 Gaussian
images and random labels of 10 classes (PCX side: pcx_vgg_step.py).

PCX is installed into its own virtual environment (benchmarks/.pcx-venv, created
on first use with `pip install pcx==0.6.3`), never into the project. Both sides
start from the same weights and data; before timing, the energies after settling
the first batch must agree. PCX's state optimizer sees the batch-mean energy, so
its state learning rate is eta_infer * B for the same per-sample rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import interleaved, table, training_step_flops
from pcn_lightning import Inference, PCNModule
from pcn_lightning.data import PCNDataModule

HERE = Path(__file__).resolve().parent
VENV = HERE / ".pcx-venv"


def pcx_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        venv.create(VENV, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "pcx==0.6.3"], check=True)
    return py


VGG5_CHANNELS = (128, 256, 512, 512)


def vgg5_layers(channels=VGG5_CHANNELS) -> list[dict]:
    """PCX's VGG-5 as our blocks: each conv (with bias) -> GELU -> max-pool, its latent after the pool."""
    return [{"conv": {"channels": c, "kernel": 3, "padding": 1}, "act": "gelu", "maxpool": 2} for c in channels] + [
        {"flatten": {}, "dense": {"bias": True}}]


def _weight_map(term):
    """The map of a term that holds its weight (the term's map itself, or the one of a Sequential holding it)."""
    maps = getattr(term.map, "maps", None)
    if maps is None:
        return term.map
    held = [mp for mp in maps if getattr(mp, "weight", None) is not None]
    assert len(held) == 1, f"expected one weighted map in {term.map}"
    return held[0]


def _macs(term) -> int:
    """Multiply-adds per sample of a term's product: a dense weight's size, or a conv's (out, in, kh, kw)
    weight size times its output pixels."""
    mp = _weight_map(term)
    if mp.weight.dim() == 4:
        return mp.weight.numel() * mp.out_hw[0] * mp.out_hw[1]
    return mp.weight.numel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "vgg5"], default="mlp",
                    help="mlp: --dims on Fashion-MNIST; vgg5: PCX's VGG-5 on synthetic 3x32x32 images")
    ap.add_argument("--dims", type=int, nargs="+", default=[784, 512, 256])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--eta_infer", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="alternations of PCX's process and ours")
    ap.add_argument("--one_sweep", action="store_true",
                    help="also time the shipped recipe (one sequential sweep at step 1, errors on arrival: "
                         "backprop's updates) beside PCX's cheapest step, T 1 (its energy checked against ours)")
    args = ap.parse_args()
    B = args.batch
    n = B * 8
    vgg = args.model == "vgg5"
    if vgg:  # CIFAR-shaped synthetic data
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        arch = dict(layers=vgg5_layers(), input_shape=[3, 32, 32])
    else:
        dm = PCNDataModule("fashion_mnist", batch_size=B)
        dm.setup("fit")
        x, y = dm.train_set.tensors
        x, y = x[:n], y[:n]
        arch = dict(dims=args.dims)
    torch.manual_seed(0)
    m = PCNModule.from_flat(**arch, output_dim=10, direction="discriminative", latent_init="feedforward",
                            T_infer=args.T, eta_infer=args.eta_infer, eta_learn=args.lr, optimizer="adam")
    Y = torch.nn.functional.one_hot(y, 10).float()
    # input side first; biases (the VGG's) as b{i}
    weights = {f"W{i}": _weight_map(t).weight.detach().numpy() for i, t in enumerate(m.net.terms)}
    weights.update({f"b{i}": _weight_map(t).bias.detach().numpy() for i, t in enumerate(m.net.terms)
                    if getattr(_weight_map(t), "bias", None) is not None})
    shape_args = dict(channels=np.array((3, *VGG5_CHANNELS))) if vgg else dict(dims=np.array(args.dims))
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "in.npz"
    np.savez(path, **shape_args, n_out=10, T=args.T, x_lr=args.eta_infer * B, w_lr=args.lr,
             steps=args.steps, batch=B, x=x.numpy(), y=Y.numpy(), **weights)
    pcx_script = HERE / ("pcx_vgg_step.py" if vgg else "pcx_step.py")

    def run_pcx(path=path) -> dict:
        r = subprocess.run([str(pcx_python()), str(pcx_script), str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    pcx = run_pcx()
    _, res = m.settle_batch(x[:B], y[:B])
    ours_energy = m.net.energies(res.errors).sum().item() / B
    agree = abs(ours_energy - pcx["energy_first_batch"]) / abs(pcx["energy_first_batch"])
    print(f"energy after settling batch 1: ours {ours_energy:.6f}  PCX {pcx['energy_first_batch']:.6f}  (relative difference {agree:.1e})")
    if agree > 1e-4:
        raise SystemExit("the two training steps are not equivalent: energies disagree")
    # the compiled variant: a copy with the same weights, each settle step through torch.compile
    mc = PCNModule(**{**dict(m.hparams), "inference": Inference(**{**vars(m.inference), "compile_settle": True})})
    mc.load_state_dict(m.state_dict())
    steps = {}
    for name, mod in (("eager", m), ("compiled", mc)):
        opt = mod.configure_optimizers()
        mod.optimizers = lambda opt=opt: opt
        mod.log = lambda *a, **k: None
        k = [0]

        def step(mod=mod, k=k):
            i = k[0] % 8
            mod.training_step((x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]), i)
            k[0] += 1
        steps[name] = step
    t0 = time.perf_counter()
    steps["compiled"]()
    compile_s = time.perf_counter() - t0
    # rounds alternate PCX's process and ours, so that machine noise hits both
    rounds = []
    for r in range(args.rounds):
        p = pcx if r == 0 else run_pcx()
        rounds.append({**interleaved(steps, repeats=args.steps, warmup=3), "pcx": p["step_median_s"]})
    t = {k: statistics.median(rd[k] for rd in rounds) for k in rounds[0]}
    per_round = [rd["eager"] / rd["pcx"] for rd in rounds]
    _, free, _ = m.net.initial_state(x[:2], torch.nn.functional.one_hot(y[:2], 10).float(), "zeros")
    # a product of n multiply-adds per sample counts as a (n, 1) matrix (for a dense term: its weight's shape)
    flops = training_step_flops([((_macs(t), 1), free[t.source]) for t in m.net.terms], B, args.T)
    gflops = lambda s: f"{flops / s / 1e9:.0f}"
    pcx_s = t["pcx"]
    rows = [["pcn-lightning (torch, eager)", f"{t['eager'] * 1e3:.1f}", gflops(t["eager"]), f"{t['eager'] / pcx_s:.2f}"],
            ["pcn-lightning (compile_settle: true)", f"{t['compiled'] * 1e3:.1f}", gflops(t["compiled"]), f"{t['compiled'] / pcx_s:.2f}"],
            [f"PCX {json.dumps(pcx['jax'])} (jax.jit)", f"{pcx_s * 1e3:.1f}", gflops(pcx_s), "1.00"]]
    if args.one_sweep:
        rows += one_sweep_rows(m, x, y, B, args, shape_args, weights, Y, Path(tmp.name), run_pcx, pcx_s)
    net = "VGG-5 (3x32x32 synthetic, 10 classes)" if vgg else f"dims={args.dims}+10"
    print(f"{net} B={B} T={args.T} threads={torch.get_num_threads()}; compile time excluded: "
          f"PCX {pcx['compile_s']:.1f} s, torch.compile {compile_s:.1f} s; medians of {args.rounds} alternated rounds "
          f"(eager / PCX per round: {', '.join(f'{v:.2f}' for v in per_round)})")
    print(table(rows, ["training step", "ms (median)", "GFLOP/s of products", "ratio to PCX"]))
    tmp.cleanup()


def one_sweep_rows(m, x, y, B, args, shape_args, weights, Y, folder, run_pcx, pcx_s) -> list[list[str]]:
    """The shipped recipe's step (one sequential sweep at step 1 from the feedforward state,
    each term learning from its error on arrival) and PCX's cheapest step (T 1, its energy
    checked against ours at one parallel step), each timed beside the T-step rows' PCX."""
    one = PCNModule(**{**dict(m.hparams), "inference": Inference(**{**vars(m.inference), "T_infer": 1, "eta_infer": 1.0,
                                                                     "schedule": "sequential"}),
                       "learning": {**vars(m.learning), "weight_errors": "on_arrival"}})
    one.load_state_dict(m.state_dict())
    path1 = folder / "t1.npz"
    np.savez(path1, **shape_args, n_out=10, T=1, x_lr=args.eta_infer * B, w_lr=args.lr, steps=args.steps, batch=B,
             x=x.numpy(), y=Y.numpy(), **weights)
    pcx1 = run_pcx(path1)
    par = PCNModule(**{**dict(m.hparams), "inference": Inference(**{**vars(m.inference), "T_infer": 1})})
    par.load_state_dict(m.state_dict())
    _, res = par.settle_batch(x[:B], y[:B])
    ours1 = par.net.energies(res.errors).sum().item() / B
    agree = abs(ours1 - pcx1["energy_first_batch"]) / abs(pcx1["energy_first_batch"])
    print(f"energy after one parallel step, batch 1: ours {ours1:.6f}  PCX {pcx1['energy_first_batch']:.6f}  "
          f"(relative difference {agree:.1e})")
    if agree > 1e-4:
        raise SystemExit("PCX at T 1 and ours disagree")
    opt = one.configure_optimizers()
    one.optimizers, one.log = (lambda: opt), (lambda *a, **k: None)
    k = [0]

    def step():
        i = k[0] % 8
        one.training_step((x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]), i)
        k[0] += 1
    from benchmarks._timing import median_time

    t1 = median_time(step, repeats=args.steps, warmup=2)
    return [["pcn-lightning, shipped recipe (one sweep, errors on arrival)", f"{t1 * 1e3:.1f}", "-", f"{t1 / pcx_s:.2f}"],
            ["PCX at T 1 (jax.jit)", f"{pcx1['step_median_s'] * 1e3:.1f}", "-", f"{pcx1['step_median_s'] / pcx_s:.2f}"]]

if __name__ == "__main__":
    main()
