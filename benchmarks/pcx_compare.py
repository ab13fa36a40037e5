"""Our training step against PCX's (JAX) on Fashion-MNIST, the same MLP, batch and T.

Usage: python -m benchmarks.pcx_compare [--batch 128] [--T 20] [--steps 30]

PCX is installed into its own virtual environment (benchmarks/.pcx-venv, created
on first use with `pip install pcx==0.6.3`), never into the project. Both sides
start from the same weights and data; before timing, the energies after settling
the first batch must agree. PCX's state optimizer sees the batch-mean energy, so
its state learning rate is eta_infer * B for the same per-sample rule.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import median_time, table
from pcn_lightning import PCNModule
from pcn_lightning import equations as eq
from pcn_lightning.data import PCNDataModule

HERE = Path(__file__).resolve().parent
VENV = HERE / ".pcx-venv"


def pcx_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        venv.create(VENV, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "pcx==0.6.3"], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[784, 512, 256])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--eta_infer", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    B = args.batch
    dm = PCNDataModule("fashion_mnist", batch_size=B)
    dm.setup("fit")
    x, y = dm.train_set.tensors
    n = B * 8
    x, y = x[:n], y[:n]
    torch.manual_seed(0)
    m = PCNModule(dims=args.dims, output_dim=10, direction="discriminative", latent_init="feedforward",
                  T_infer=args.T, eta_infer=args.eta_infer, eta_learn=args.lr, optimizer="adam")
    Y = torch.nn.functional.one_hot(y, 10).float()
    weights = {f"W{i}": w.detach().numpy() for i, w in enumerate(list(m.net.weights) + [m.net.readout])}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.npz"
        np.savez(path, dims=np.array(args.dims), n_out=10, T=args.T, x_lr=args.eta_infer * B, w_lr=args.lr,
                 steps=args.steps, batch=B, x=x.numpy(), y=Y.numpy(), **weights)
        r = subprocess.run([str(pcx_python()), str(HERE / "pcx_step.py"), str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        pcx = json.loads(r.stdout.strip().splitlines()[-1])
    _, res = m.settle_batch(x[:B], y[:B])
    ours_energy = eq.energy(res.errors).item() / B
    agree = abs(ours_energy - pcx["energy_first_batch"]) / abs(pcx["energy_first_batch"])
    print(f"energy after settling batch 1: ours {ours_energy:.6f}  PCX {pcx['energy_first_batch']:.6f}  (relative difference {agree:.1e})")
    if agree > 1e-4:
        raise SystemExit("the two training steps are not equivalent: energies disagree")
    opt = m.configure_optimizers()
    m.optimizers = lambda: opt
    m.log = lambda *a, **k: None
    k = [0]

    def ours_step():
        i = k[0] % 8
        m.training_step((x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]), i)
        k[0] += 1

    ours = median_time(ours_step, repeats=args.steps, warmup=3)
    rows = [["pcn-lightning (torch, eager)", f"{ours * 1e3:.1f}", f"{ours / pcx['step_median_s']:.2f}"],
            [f"PCX {json.dumps(pcx['jax'])} (jax.jit)", f"{pcx['step_median_s'] * 1e3:.1f}", "1.00"]]
    print(f"dims={args.dims}+10 B={B} T={args.T} threads={torch.get_num_threads()}; PCX compile {pcx['compile_s']:.1f} s (excluded)")
    print(table(rows, ["training step", "ms (median)", "ratio to PCX"]))


if __name__ == "__main__":
    main()
