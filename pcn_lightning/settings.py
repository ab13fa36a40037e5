"""Validated settings of a PCN run, one dataclass a concern.

- `Inference`: how latents settle (one instance for training, one for evaluation);
- `Learning`: how the parameters learn (optimizer, rates, schedule, rules).

The network itself is described by `pcn_lightning.builders.NetworkSpec`. Each
dataclass checks its own fields when created, so a bad value fails before any
work with one message. `pcn_lightning.flat` lets the command line stay flat:
`--model.T_infer 50` means `--model.inference.T_infer 50`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from pcn_lightning.errors import ConfigError

LATENT_INITS = ("random", "zeros", "feedforward", "amortized")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = (None, "cosine", "step")
READOUT_LEARNING = ("clamped", "label_free")
WEIGHT_ERRORS = ("settled", "on_arrival")
SCHEDULES = ("parallel", "sequential")
NUDGING = ("positive", "negative", "centred", "centred_epoch")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(f"{name} must be a positive number; got {value!r}")
    return float(value)


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {list(choices)}")


@dataclass
class Inference:
    """How the latents settle.

    Args:
        T_infer: inference steps (the most, with settle_tol).
        eta_infer: inference step size.
        settle_tol: stop once the energy fell by less than this fraction over the
            last 10 % of T_infer steps (None: always T_infer steps).
        latent_init: where latents start: "random" (the seed's), "zeros",
            "feedforward" (predictions from the data outwards: the discriminative
            network's exact label-free state), "amortized" (the learned bottom-up
            guess of a generative network built with amortized=True).
        latent_init_std: standard deviation of random latents.
        compile_settle: run each step through torch.compile (same arithmetic, fused;
            parallel schedule only).
        schedule: "parallel" (every free node steps at once: the seed's) or
            "sequential" (one node at a time from the label outwards, each seeing
            the new values before it: one step carries the label's error through
            every layer; see `inference`).
        step_size: "fixed" (every node steps by eta_infer) or "normalized" (each
            node's step divided by a bound on its curvature, read once per settle:
            eta_infer is then a fraction of the safe step, and settling stays stable
            as the weights grow; see `inference.step_sizes`).
        momentum: heavy-ball momentum of the latents, in [0, 1) (PCX's latent SGD):
            v <- momentum v + dE/dx, x <- x - eta v, the velocity reset every settle.
        state: what inference moves: "latents" (state PC) or "errors" (ePC: each free
            latent is its prediction plus an error, and the errors settle, every one at
            once after one pass back from the label; see `epc`).
    """

    T_infer: int = 50
    eta_infer: float = 0.05
    settle_tol: Optional[float] = None
    latent_init: str = "random"
    latent_init_std: float = 0.1
    compile_settle: bool = False
    schedule: str = "parallel"
    step_size: str = "fixed"
    momentum: float = 0.0
    state: str = "latents"

    def __post_init__(self) -> None:
        one_of("state", self.state, ("latents", "errors"))
        if self.state == "errors":
            wrong = [f"{name} {value!r} (needs {need!r})" for name, value, need in (
                ("latent_init", self.latent_init, "feedforward"), ("schedule", self.schedule, "parallel"),
                ("compile_settle", self.compile_settle, False),
                ("settle_tol", self.settle_tol, None)) if value != need]
            if wrong:
                raise ConfigError("inference.state 'errors' (ePC) starts from the feedforward state and steps every "
                                  "error at once; change " + ", ".join(wrong))
        positive_int("T_infer", self.T_infer)
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) \
                or not 0 <= self.momentum < 1:
            raise ConfigError(f"inference.momentum must be a number in [0, 1) (0: plain gradient descent); "
                              f"got {self.momentum!r}")
        self.momentum = float(self.momentum)
        if self.momentum and self.compile_settle:
            raise ConfigError("compile_settle compiles the plain step; use momentum 0 with it")
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("step_size", self.step_size, ("fixed", "normalized"))
        if self.step_size == "normalized" and self.compile_settle:
            raise ConfigError("compile_settle takes one step size; use step_size 'fixed' with it")
        if self.schedule == "sequential" and self.compile_settle:
            raise ConfigError("compile_settle compiles the parallel step; use schedule 'parallel' with it")
        self.eta_infer = positive_float("eta_infer", self.eta_infer)
        if self.settle_tol is not None:
            positive_float("settle_tol", self.settle_tol)
        one_of("latent_init", self.latent_init, LATENT_INITS)
        positive_float("latent_init_std", self.latent_init_std)


@dataclass
class EvalInference:
    """Inference at evaluation; every field left None is taken from training's."""

    T_infer: Optional[int] = None
    eta_infer: Optional[float] = None
    settle_tol: Optional[float] = None
    latent_init: Optional[str] = None

    def resolve(self, train: Inference) -> Inference:
        return Inference(
            T_infer=self.T_infer if self.T_infer is not None else train.T_infer,
            eta_infer=self.eta_infer if self.eta_infer is not None else train.eta_infer,
            settle_tol=self.settle_tol,
            latent_init=self.latent_init or train.latent_init,
            latent_init_std=train.latent_init_std,
            compile_settle=train.compile_settle,
            schedule=train.schedule,
            step_size=train.step_size,
            momentum=train.momentum,
            state=train.state,
        )


@dataclass
class Learning:
    """How the parameters learn from the settled errors.

    Args:
        eta_learn: learning rate, or one per term in the network's order (input
            side first, the label's term last).
        optimizer: sgd, adam or adamw, fed dE/dtheta / B as the gradient.
        momentum: SGD momentum.
        weight_decay: optimizer weight decay.
        lr_scheduler: None, "cosine" (over max_epochs) or "step" (x0.1 every
            lr_step_epochs), stepped once per epoch.
        lr_step_epochs: period of the step scheduler.
        t_learn: optimizer steps per batch on the frozen settled latents.
        readout_learning: which state the label's term learns from: "clamped" (the
            seed's: the state settled with the label) or "label_free" (a second
            settle without the label, the state evaluation reads).
        weight_errors: which errors the Hebbian rule reads: "settled" (every term's
            error at the settled state: dE/dtheta there) or "on_arrival" (each term's
            error when the sweep reaches its source, before the source moves: Z-IL,
            Song et al. 2020). "on_arrival" needs one sequential sweep from the
            feedforward state (schedule sequential, T_infer 1, latent_init
            feedforward); at eta_infer 1 (fixed steps) its updates are backprop's
            gradients times the label's precision, exactly (tests/unit/test_equations.py).
        beta: nudge the label instead of clamping it: the label node is clamped at
            u + b (y - u), u the feedforward prediction of the label, and the updates
            are scaled by 1/b (PCX's nudging; None: the label clamped at y, at its
            precision). In (0, 1]: small is weak nudging (near backprop), 1 the label
            clamped (see `timing.Nudged`).
        nudging: the sign b of the nudge: "positive" (+beta), "negative" (-beta),
            "centred" (a random sign each batch) or "centred_epoch" (each epoch).
        eta_amort: learning rate of the amortizer (amortized networks).
        learn_precision: learn each term's precision by its own local rule.
        precision_shape: "scalar" (one precision per term) or "unit" (one per
            predicted value: a diagonal precision).
        precision_prior: strength nu of the Gamma prior on every learned precision,
            in pseudo-observations per observation, centred on the configured
            precision p0; it bounds a precision by p0 (1 + nu) / nu (0: no prior:
            precisions that the latents can explain away run off).
        predictive_precision: learn pi of the class probabilities softmax(pi *
            prediction) from the label-free prediction, by the gradient of the true
            class's negative log-likelihood (see `rules.PredictivePrecision`); costs
            a label-free settle per step where the network needs settling.
        eta_precision: learning rate of the log-precisions.
        grad_clip_norm: clip the norm of the hand-set gradients before each step.
        adam_eps: Adam's epsilon (torch's 1e-8 by default). Adam makes a gradient's
            scale irrelevant except against this floor, and a PCN's settled errors
            can sit far below backprop's gradients (each unsettled layer down the
            chain shrinks them by its step size: ~1e-6 of backprop's at the input
            of the three-layer language model), where 1e-8 damps their updates.
        adam_betas: Adam's (beta1, beta2), torch's (0.9, 0.999) by default. A PCN's
            error scale drifts as the weights grow (curvature-normalized steps shrink
            with them), and Adam's running RMS lags it by ~1 / (1 - beta2) steps: the
            updates of the lower layers then fall to a fraction of the learning rate
            (fast drift early in training; the language model uses 0.9,
            benchmarks/LANGUAGE.md and benchmarks/language_scale.py).
    """

    eta_learn: Union[float, list[float]] = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: Optional[str] = None
    lr_step_epochs: int = 10
    t_learn: int = 1
    readout_learning: str = "clamped"
    weight_errors: str = "settled"
    beta: Optional[float] = None
    nudging: str = "positive"
    eta_amort: float = 0.001
    learn_precision: bool = False
    precision_shape: str = "scalar"
    precision_prior: float = 0.0
    predictive_precision: bool = False
    eta_precision: float = 0.01
    grad_clip_norm: Optional[float] = None
    adam_eps: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        etas = [self.eta_learn] if isinstance(self.eta_learn, (int, float)) else list(self.eta_learn)
        for e in etas:
            positive_float("eta_learn", e)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        positive_int("lr_step_epochs", self.lr_step_epochs)
        positive_int("t_learn", self.t_learn)
        one_of("readout_learning", self.readout_learning, READOUT_LEARNING)
        one_of("weight_errors", self.weight_errors, WEIGHT_ERRORS)
        one_of("nudging", self.nudging, NUDGING)
        if self.beta is None and self.nudging != "positive":
            raise ConfigError(f"nudging {self.nudging!r} needs learning.beta (the nudge's size, e.g. 0.1)")
        if self.beta is not None and (isinstance(self.beta, bool) or not isinstance(self.beta, (int, float))
                                      or not 0 < self.beta <= 1):
            raise ConfigError(f"learning.beta must be a number in (0, 1] (the updates are scaled by 1/beta, so 0 "
                              f"is no signal; 1 clamps the label); got {self.beta!r}")
        positive_float("eta_amort", self.eta_amort)
        positive_float("eta_precision", self.eta_precision)
        positive_float("adam_eps", self.adam_eps)
        betas = tuple(self.adam_betas) if isinstance(self.adam_betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                      for b in betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.99]; got {self.adam_betas!r}")
        self.adam_betas = (float(betas[0]), float(betas[1]))
        one_of("precision_shape", self.precision_shape, ("scalar", "unit"))
        if isinstance(self.precision_prior, bool) or not isinstance(self.precision_prior, (int, float)) \
                or not 0 <= self.precision_prior < math.inf:
            raise ConfigError(f"precision_prior must be a number >= 0; got {self.precision_prior!r}")
        if self.grad_clip_norm is not None:
            positive_float("grad_clip_norm", self.grad_clip_norm)
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay must be >= 0")

    def rates(self, n_terms: int) -> list[float]:
        """One learning rate per term."""
        if isinstance(self.eta_learn, (int, float)):
            return [float(self.eta_learn)] * n_terms
        if len(self.eta_learn) != n_terms:
            raise ConfigError(
                f"eta_learn has {len(self.eta_learn)} entries; give one number or {n_terms} "
                f"(one per weight matrix W(0..{n_terms - 2}) and one for the readout)"
            )
        return [float(e) for e in self.eta_learn]


def as_settings(value, cls):
    """A settings dataclass from itself, a mapping (a checkpoint's saved hyperparameters)
    or None (the defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise ConfigError(f"expected {cls.__name__} settings (a mapping); got {value!r}")
