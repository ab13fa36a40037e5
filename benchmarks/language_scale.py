"""Why temporal PC trails backprop with the same one-step credit: direction or scale?

Usage: python -m benchmarks.language_scale [--updates 1000] [--modes bp pc ...]
                                           [--beta2 0.99] [--data_dir ...]

Trains the shipped language model (configs/shakespeare_char.yaml, constant learning
rate) from one initialization for `--updates` batches, four ways, and prints the
validation bits per character (the first 60 batches of the validation split) every
250 updates:

    bp          backprop with one-step credit (the twin's `through_time: false`)
    pc          temporal PC's local updates (no autograd)
    bp_pc_norm  backprop's update of each weight tensor, rescaled to the norm of PC's
    pc_bp_norm  PC's update of each weight tensor, rescaled to the norm of backprop's

The two swaps separate the two ways PC's updates differ from backprop's: their
direction (each tensor's cosine to backprop's, ~0.999 weakly clamped) and their
scale (each tensor's norm, which drifts as the weights grow). Whichever swap
trains like PC names the difference. The swaps compute both updates each step
(autograd only for the reference, never in PC's rules). Prints, per weight tensor,
the ratio of PC's update norm to backprop's every 250 updates (how the scale drifts).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from pcn_lightning import TemporalPCNModule, TemporalTwin
from pcn_lightning.settings import Inference, Learning
from pcn_lightning.text import ShakespeareCharDataModule

REPO = Path(__file__).resolve().parents[1]
MODES = ("bp", "pc", "bp_pc_norm", "pc_bp_norm")


def train(mode: str, args) -> list[str]:
    cfg = yaml.safe_load((REPO / "configs/shakespeare_char.yaml").read_text())
    init, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    learning = Learning(**{**init["learning"], "lr_scheduler": None,
                           "adam_betas": [init["learning"]["adam_betas"][0], args.beta2]})
    common = dict(hidden=init["hidden"], window=init["window"], extra_layers=init["extra_layers"],
                  label_precision=init["label_precision"], learning=learning, output_dim=65)
    torch.manual_seed(0)
    pc = TemporalPCNModule(**common, carry=init["carry"], inference=Inference(**init["inference"]))
    twin = TemporalTwin(**common, through_time=False)
    twin.net = pc.net  # one set of weights; each module carries its own (identical) state
    pc.log = twin.log = lambda *a, **k: None
    opt = pc.configure_optimizers()

    class NoStep:  # PC's training_step leaves its updates in .grad; the step is taken below
        def step(self) -> None:
            pass
    pc.optimizers = lambda: NoStep()
    dm = ShakespeareCharDataModule(data_dir=args.data_dir, batch_size=data["batch_size"], seq_len=data["seq_len"])
    dm.setup()
    params = list(pc.net.parameters())
    weights = [i for i, p in enumerate(params) if p.dim() == 2]

    def val_bits(batches: int = 60) -> float:
        pc._state.pop("val", None)
        pc._bits["val"] = [0.0, 0]
        for i, b in enumerate(dm.val_dataloader()):
            if i == batches:
                break
            pc._eval("val", b)
        total, n = pc._bits["val"]
        return total / n

    lines, it, t0 = [], iter(dm.train_dataloader()), time.perf_counter()
    for step in range(1, args.updates + 1):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            batch = next(it)
        g_pc = g_bp = None
        primary = twin if mode == "bp" else pc  # whose state moves on; the other starts each batch from it
        start = primary._state.get("train")
        for module, needed in ((pc, mode != "bp"), (twin, mode != "pc")):
            if not (needed or step % 250 == 0):
                continue
            module._state.pop("train", None)
            if start is not None:
                module._state["train"] = tuple(t.clone() for t in start)
            if module is pc:
                pc.training_step(batch, step)
                g_pc = [p.grad.clone() for p in params]
            else:
                g_bp = torch.autograd.grad(twin.training_step(batch, step), params)
        new = {"bp": lambda i: g_bp[i], "pc": lambda i: g_pc[i],
               "bp_pc_norm": lambda i: g_bp[i] * (g_pc[i].norm() / g_bp[i].norm()),
               "pc_bp_norm": lambda i: g_pc[i] * (g_bp[i].norm() / g_pc[i].norm())}[mode]
        for i, p in enumerate(params):
            p.grad = new(i).detach().clone()
        opt.step()
        if step % 250 == 0:
            ratios = " ".join(f"{float(g_pc[i].norm() / g_bp[i].norm()):.2e}" for i in weights)
            line = (f"{mode:10s} update {step:5d}  val bits/char {val_bits():.4f}  "
                    f"PC/BP update norm per weight (input->output) {ratios}  {time.perf_counter() - t0:.0f}s")
            print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--beta2", type=float, default=None, help="Adam's beta2 (default: the config's)")
    ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare"))
    args = ap.parse_args()
    if args.beta2 is None:
        cfg = yaml.safe_load((REPO / "configs/shakespeare_char.yaml").read_text())
        args.beta2 = cfg["model"]["init_args"]["learning"]["adam_betas"][1]
    print(f"beta2 {args.beta2}, threads {torch.get_num_threads()}")
    for mode in args.modes:
        train(mode, args)


if __name__ == "__main__":
    main()
