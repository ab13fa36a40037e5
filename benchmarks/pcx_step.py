"""The PCX (JAX) side of benchmarks/pcx_compare.py. Runs in its own virtual
environment (pcx, jax); never imported by the project.

Reads weights and a batch from an .npz file, builds the same discriminative MLP
with PCX (no biases, ReLU hidden layers, linear output, squared-error energies,
feedforward initialization, SGD on the states, Adam on the weights), reports the
energy after T inference steps on the first batch, then times training steps.
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pcx as px
import pcx.functional as pxf
import pcx.nn as pxnn
import pcx.predictive_coding as pxc
import pcx.utils as pxu


class MLP(pxc.EnergyModule):
    def __init__(self, dims, n_out):
        super().__init__()
        sizes = list(dims) + [n_out]
        self.layers = [pxnn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])]
        self.vodes = [pxc.Vode() for _ in sizes[1:-1]] + [pxc.Vode(pxc.se_energy)]
        self.vodes[-1].h.frozen = True

    def __call__(self, x, y):
        for v, l in zip(self.vodes[:-1], self.layers[:-1]):
            x = v(jax.nn.relu(l(x)))
        x = self.vodes[-1](self.layers[-1](x))
        if y is not None:
            self.vodes[-1].set("h", y)
        return self.vodes[-1].get("u")


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0, 0), out_axes=0)
def forward(x, y, *, model):
    return model(x, y)


@pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0,), out_axes=(None, 0), axis_name="batch")
def energy(x, *, model):
    y_ = model(x, None)
    return jax.lax.pmean(model.energy().sum(), "batch"), y_


def settle(T, x, y, model, optim_h):
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(x, y, model=model)
    optim_h.init(pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))
    for _ in range(T):
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            _, g = pxf.value_and_grad(pxu.M_hasnot(pxc.VodeParam, frozen=True).to([False, True]), has_aux=True)(energy)(x, model=model)
        optim_h.step(model, g["model"])
    optim_h.clear()


@pxf.jit(static_argnums=0)
def energy_after_settle(T, x, y, *, model, optim_h):
    settle(T, x, y, model, optim_h)
    with pxu.step(model, clear_params=pxc.VodeParam.Cache):
        e, _ = energy(x, model=model)
    return e


@pxf.jit(static_argnums=0)
def train_on_batch(T, x, y, *, model, optim_w, optim_h):
    model.train()
    settle(T, x, y, model, optim_h)
    with pxu.step(model, clear_params=pxc.VodeParam.Cache):
        _, g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)(x, model=model)
    optim_w.step(model, g["model"])


def main(path):
    d = np.load(path)
    dims = [int(v) for v in d["dims"]]
    T, x_lr, w_lr, steps = int(d["T"]), float(d["x_lr"]), float(d["w_lr"]), int(d["steps"])
    model = MLP(dims, int(d["n_out"]))
    xs, ys = jnp.asarray(d["x"]), jnp.asarray(d["y"])
    B = int(d["batch"])
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(xs[:B], None, model=model)
        for i, l in enumerate(model.layers):
            l.nn.weight.set(jnp.asarray(d[f"W{i}"]))
        optim_h = pxu.Optim(lambda: optax.sgd(x_lr))
        optim_w = pxu.Optim(lambda: optax.adam(w_lr), pxu.M(pxnn.LayerParam)(model))
    e0 = float(energy_after_settle(T, xs[:B], ys[:B], model=model, optim_h=optim_h))
    n_batches = xs.shape[0] // B
    times = []
    for k in range(steps):
        i = k % n_batches
        t0 = time.perf_counter()
        train_on_batch(T, xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B], model=model, optim_w=optim_w, optim_h=optim_h)
        jax.block_until_ready(model.layers[0].nn.weight.get())
        times.append(time.perf_counter() - t0)
    warm = times[3:] if len(times) > 5 else times[1:]
    print(json.dumps({"energy_first_batch": e0, "step_median_s": statistics.median(warm),
                      "compile_s": times[0], "jax": jax.__version__, "pcx_devices": str(jax.devices())}))


if __name__ == "__main__":
    main(sys.argv[1])
