"""The PCX (JAX) side of `python -m benchmarks.pcx_compare --model vgg5`. Runs in
PCX's own virtual environment (pcx, jax); never imported by the project.

Builds VGG-5 as PCX's benchmark paper does (Pinchetti et al. 2024, "Benchmarking
Predictive Coding Networks -- Made Simple"): four blocks conv 3x3 (stride 1,
padding 1, with bias) -> GELU -> max-pool 2x2 stride 2 -> Vode (squared-error
energy), channels 3 -> 128 -> 256 -> 512 -> 512, then flatten (C, H, W order) ->
Linear(512 * 2 * 2, 10) with bias -> the output Vode, its h clamped (frozen) to
the one-hot label. The image is not a Vode. Feedforward initialization (STATUS.INIT),
T SGD steps on the free Vodes against the batch-mean energy, one Adam step on
the weights (pcx_step.py's settle / train step, shared).

Conventions matched to the torch side:
  * GELU is the exact (erf) one: jax.nn.gelu(approximate=False); jax's default,
    and so the paper's `jax.nn.gelu`, is the tanh approximation.
  * the label is written as h = y (the paper's h = u - beta * (u - y) with beta = 1
    equals y only up to float rounding).
  * equinox's conv layout is torch's (weight (out, in, kh, kw), NCHW via
    lax.conv_general_dilated's defaults), bias shape (out, 1, 1); Linear weight is
    (out, in) as in torch; flattening a (C, H, W) array is torch's order.

Reads weights and data from an .npz file (written by pcx_compare.py), reports the
energy after settling the first batch, then times training steps; prints one JSON line.
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pcx.nn as pxnn
import pcx.predictive_coding as pxc
import pcx.utils as pxu

from pcx_step import energy_after_settle, forward, train_on_batch  # generic over the model (same directory)


def gelu(x):
    return jax.nn.gelu(x, approximate=False)


class VGG5(pxc.EnergyModule):
    def __init__(self, channels=(3, 128, 256, 512, 512), input_size=32, n_out=10):
        super().__init__()
        self.convs = [pxnn.Conv2d(a, b, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
                      for a, b in zip(channels[:-1], channels[1:])]
        self.pool = pxnn.MaxPool2d(kernel_size=2, stride=2)
        side = input_size // 2 ** len(self.convs)
        self.readout = pxnn.Linear(channels[-1] * side * side, n_out)
        self.vodes = [pxc.Vode() for _ in self.convs] + [pxc.Vode(pxc.se_energy)]
        self.vodes[-1].h.frozen = True

    def __call__(self, x, y):
        for conv, v in zip(self.convs, self.vodes[:-1]):
            x = v(self.pool(gelu(conv(x))))
        x = self.vodes[-1](self.readout(x.flatten()))
        if y is not None:
            self.vodes[-1].set("h", y)
        return self.vodes[-1].get("u")


def main(path):
    d = np.load(path)
    T, x_lr, w_lr, steps = int(d["T"]), float(d["x_lr"]), float(d["w_lr"]), int(d["steps"])
    channels = tuple(int(c) for c in d["channels"])
    xs, ys = jnp.asarray(d["x"]), jnp.asarray(d["y"])
    B = int(d["batch"])
    model = VGG5(channels, int(xs.shape[-1]), int(d["n_out"]))
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(xs[:B], None, model=model)
        for i, conv in enumerate(model.convs):
            w = jnp.asarray(d[f"W{i}"])
            assert w.shape == conv.nn.weight.get().shape, (w.shape, conv.nn.weight.get().shape)
            conv.nn.weight.set(w)
            conv.nn.bias.set(jnp.asarray(d[f"b{i}"]).reshape(conv.nn.bias.get().shape))
        k = len(model.convs)
        assert d[f"W{k}"].shape == model.readout.nn.weight.get().shape
        model.readout.nn.weight.set(jnp.asarray(d[f"W{k}"]))
        model.readout.nn.bias.set(jnp.asarray(d[f"b{k}"]))
        optim_h = pxu.Optim(lambda: optax.sgd(x_lr))
        optim_w = pxu.Optim(lambda: optax.adam(w_lr), pxu.M(pxnn.LayerParam)(model))
    e0 = float(energy_after_settle(T, xs[:B], ys[:B], model=model, optim_h=optim_h))
    n_batches = xs.shape[0] // B
    times = []
    for s in range(steps):
        i = s % n_batches
        t0 = time.perf_counter()
        train_on_batch(T, xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B], model=model, optim_w=optim_w, optim_h=optim_h)
        jax.block_until_ready(model.convs[0].nn.weight.get())
        times.append(time.perf_counter() - t0)
    warm = times[3:] if len(times) > 5 else times[1:]
    print(json.dumps({"energy_first_batch": e0, "step_median_s": statistics.median(warm) if warm else float("nan"),
                      "compile_s": times[0] if times else float("nan"), "jax": jax.__version__,
                      "pcx_devices": str(jax.devices())}))


if __name__ == "__main__":
    main(sys.argv[1])
