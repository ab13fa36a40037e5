"""Learning timings: what a training step's settle clamps, which errors the weights
learn from, and how those updates are scaled. One object a recipe, chosen by
`timing_for(learning)`; a model clamps the label as `sign` and `label_target` say,
then hands the start to `settle_for_learning` and gets the same things back whatever
the recipe.

- `Settled` (`weight_errors: settled`): the label clamped (at the configured label
  precision), every term learns from its error where inference ends: dE/dtheta there.
- `OnArrival` (`weight_errors: on_arrival`): one sequential sweep from the feedforward
  state, each term learning from its error when the sweep reaches its source (Z-IL):
  backprop's gradients by construction, not a settle (see `rules.OnArrival`).
- `Nudged` (`learning.beta` set): the label node clamped at the nudged target
  u + b (y - u), u the network's feedforward prediction of the label, b = +beta, -beta
  or a random sign of beta (centred: drawn per batch or per epoch, the same on every
  DDP rank); the weights learn from the settled errors scaled by 1/b (PCX, Pinchetti et
  al. 2025; equilibrium propagation's nudged phase, Scellier & Bengio 2017). With the
  free phase at the feedforward state (where a discriminative network's weight
  gradient is zero), the update is the one-sided difference (g(b) - g(0)) / b; centred
  nudging averages, over its sign, to the symmetric difference (g(beta) - g(-beta)) / (2 beta),
  which cancels the first-order bias in beta.

Adding a timing: subclass `Timing` here, give it a name and register it in
`timing_for`; every model that settles uses it through these methods.
"""

from __future__ import annotations

from typing import Optional

import torch

from pcn_lightning import seeding
from pcn_lightning.errors import ConfigError
from pcn_lightning.epc import settle_by_state
from pcn_lightning.inference import SettleResult
from pcn_lightning.rules import OnArrival as ArrivalRecorder, SettledBatch

Tensor = torch.Tensor



class Timing:
    """Settled errors, the label clamped (the default)."""

    name = "settled"
    settles = True  # the settle lowers the energy: the guard checks that it did

    def check(self, inference, learning) -> None:
        """The settings this timing can run with, or one ConfigError."""

    def sign(self, seed: int, step: int, epoch: int) -> float:
        """The nudge b of this batch (1: the label clamped as given)."""
        return 1.0

    def label_target(self, label: Tensor, prediction: Optional[Tensor], b: float) -> Tensor:
        """What the label node is clamped to, from the one-hot label and the feedforward
        prediction u of it."""
        return label

    def hooks(self, net):
        """(before_node, repredict, arrival) for `inference.settle`."""
        return None, True, None

    def gradient_scale(self, b: float) -> float:
        """What the Hebbian updates are multiplied by."""
        return 1.0


class Settled(Timing):
    pass


class OnArrival(Timing):
    name = "on_arrival"
    settles = False  # one sweep by design: no settle whose energy must fall

    def check(self, inference, learning) -> None:
        wrong = [f"{name} {value!r} (needs {need!r})" for name, value, need in (
            ("inference.schedule", inference.schedule, "sequential"), ("inference.T_infer", inference.T_infer, 1),
            ("inference.latent_init", inference.latent_init, "feedforward"),
            ("learning.t_learn", getattr(learning, "t_learn", 1), 1),
            ("inference.compile_settle", inference.compile_settle, False),
            ("inference.settle_tol", inference.settle_tol, None),
            ("inference.momentum", getattr(inference, "momentum", 0.0), 0.0))
            if value != need]
        if wrong:
            raise ConfigError("learning.weight_errors 'on_arrival' learns from one sequential sweep from the "
                              "feedforward state; change " + ", ".join(wrong) + " (or use weight_errors 'settled')")

    def hooks(self, net):
        arrival = ArrivalRecorder(net)
        # the sweep's end state is never read: a moved node's predictions are not made again, and
        # every term keeps its error on arrival (what learning reads, logs show and the guard checks)
        return arrival.before_node, False, arrival


class Nudged(Timing):
    """The label node at u + b (y - u); the updates scaled by 1/b."""

    name = "nudged"

    def __init__(self, beta: float, nudging: str = "positive") -> None:
        self.beta, self.nudging = float(beta), nudging

    def check(self, inference, learning) -> None:
        if inference.latent_init != "feedforward":
            raise ConfigError("learning.beta nudges the label from the network's feedforward prediction; use "
                              f"inference.latent_init 'feedforward' (got {inference.latent_init!r})")

    def sign(self, seed: int, step: int, epoch: int) -> float:
        if self.nudging == "positive":
            return self.beta
        if self.nudging == "negative":
            return -self.beta
        key = epoch if self.nudging == "centred_epoch" else step  # no rank: every rank draws the same sign
        coin = torch.randint(0, 2, (), generator=seeding.nudge_generator(seed, key)).item()
        return self.beta if coin else -self.beta

    def label_target(self, label: Tensor, prediction: Optional[Tensor], b: float) -> Tensor:
        if b == 1.0:  # the label itself, exactly (u + (y - u) rounds)
            return label
        return torch.lerp(prediction, label, b)  # u + b (y - u)

    def gradient_scale(self, b: float) -> float:
        return 1.0 / b


def settle_for_learning(net, start, settings, timing: Timing, b: float = 1.0, record: bool = False,
                        label_free_state=None) -> tuple[SettledBatch, SettleResult]:
    """The settle a training step learns from, for every model: `start` (an
    `InitialState`, its label node already clamped as the timing wants) settled by
    `settings` in place, and what the rules read from it (`b`: the batch's nudge, which
    scales the updates; `label_free_state`: the label-free settle some rules need, run on
    first use)."""
    before_node, repredict, arrival = timing.hooks(net)
    result = settle_by_state(net, start.xs, start.free, settings, record, start.predictions, before_node, repredict)
    batch = SettledBatch(net, start.xs, result.errors, start.xs[net.label],
                         label_free_state or (lambda: start.xs), None if arrival is None else arrival.grads,
                         timing.gradient_scale(b))
    return batch, result


def guard_start(timing: Timing, result: SettleResult, count: int):
    """The energy before the settle, per sample or character, for the divergence guard;
    None where the timing does not settle (one sweep with errors on arrival)."""
    return result.start / count if timing.settles and result.start is not None else None


def check_on_arrival(inference, learning) -> None:
    """The settings of one sequential sweep with errors on arrival, or one ConfigError."""
    OnArrival().check(inference, learning)


def timing_for(learning) -> Timing:
    """The timing a `Learning` asks for."""
    if getattr(learning, "beta", None) is not None:
        if learning.weight_errors != "settled":
            raise ConfigError("learning.beta nudges the label of a settle; use weight_errors 'settled' with it "
                              f"(got {learning.weight_errors!r})")
        return Nudged(learning.beta, learning.nudging)
    return OnArrival() if learning.weight_errors == "on_arrival" else Settled()
