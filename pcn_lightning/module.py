"""`PCNModule`: the LightningModule that orchestrates settling and Hebbian learning.

The math lives in `pcn_lightning.equations`; this module only wires it to
Lightning: manual optimization, hand-set gradients (`p.grad = dE/dW / B`), the
optimizer step (so `global_step`, checkpoints and `max_steps` work), explicit
all-reduce under DDP, logging, and label-free evaluation.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from pcn_lightning import equations as eq
from pcn_lightning.errors import ConfigError, DivergenceError
from pcn_lightning.network import LATENT_INITS, PredictiveCodingNetwork

Tensor = torch.Tensor

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = (None, "cosine", "step")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(f"{name} must be a positive number; got {value!r}")
    return float(value)


class PCNModule(L.LightningModule):
    """Predictive coding network trained by local rules under Lightning.

    Args:
        dims: layer sizes, input first, e.g. [3072, 1000, 500, 10].
        activations: one name for every layer or a list with one per weight matrix
            (input side first): relu, linear, tanh, sigmoid, leaky_relu.
        direction: "generative" (the seed's model) or "discriminative".
        input_dim: the data's input size (linked from the data); must equal dims[0].
        output_dim: number of classes (linked from the data), the readout's size.
        T_infer: inference steps per training batch.
        eta_infer: inference step size.
        T_infer_eval: inference steps at evaluation (generative); default T_infer.
        eta_infer_eval: inference step size at evaluation; default eta_infer.
        t_learn: weight updates per batch on the frozen settled latents (the seed
            used many micro-steps; each one is an optimizer step).
        eta_learn: learning rate, or one per weight matrix plus the readout (L+1).
        optimizer: sgd, adam or adamw, fed dE/dW / B as the gradient.
        momentum: SGD momentum.
        weight_decay: optimizer weight decay.
        lr_scheduler: None, "cosine" (over max_epochs) or "step" (x0.1 every
            `lr_step_epochs`), stepped once per epoch.
        latent_init: "random" (the seed's), "zeros", or "feedforward"
            (discriminative only).
        latent_init_std: standard deviation of random latents.
        settle_tol: stop inference early once the relative energy drop over the
            last 10 % of T_infer steps is below this (None: always T_infer steps).
        divergence_factor: stop training when the per-sample energy exceeds this
            multiple of the first batch's, or when the settle ends this many times
            above where it started.
        grad_clip_norm: clip the norm of the hand-set gradients (all parameters
            together) before each optimizer step; Trainer(gradient_clip_val) does
            not work with manual optimization.
        precisions: fixed precision of each prediction error, one per weight matrix
            plus the readout (the order of eta_learn): E = 1/2 sum pi ||eps||^2.
            None: all 1 (the seed's energy). A small readout precision in the
            discriminative direction makes the settled errors approach backprop's.
        eval_mode: how a generative model predicts at evaluation, never seeing the
            label: "readout" (settle from the image, read the top latent) or
            "energy" (for each class, clamp it, settle, and choose the class whose
            settled energy is lowest; C times the cost).
        amortized: generative only: learn a bottom-up network V that guesses the
            settled latents from the data (hybrid predictive coding), trained by
            its own local rule on the settled latents; use latent_init="amortized"
            to start every settle (training and evaluation) from its guess.
        eta_amort: learning rate of the amortization weights.
        readout_learning: generative only: which state the readout R learns from.
            "clamped" (the seed's): the state settled with the label clamped.
            "label_free": a second settle of the same batch without the label,
            exactly as evaluation settles (T_infer_eval, eta_infer_eval), so R
            learns to read the top latents it will see at test; its rule is the
            same local delta rule. W (and V) still learn from the clamped state.
            Costs one more settle per training step.
        learn_precision: learn the precisions too (starting from `precisions`, or
            1), each by its own local rule on the free energy F = E - sum n/2 log pi:
            log pi(l) descends pi(l)/2 ||eps(l)||^2 - n(l)/2 (per sample), so pi(l)
            tracks the inverse mean squared error of its term.
        eta_precision: learning rate of the log-precisions.
        compile_settle: run each inference step through `torch.compile` (inductor):
            the same arithmetic, fused; the first batches pay the compilation.
            See benchmarks/RESULTS.md for when it pays off.
        seed: seed of the latent initialization.
    """

    def __init__(
        self,
        dims: Sequence[int] = (784, 256, 10),
        activations: Union[str, list[str]] = "relu",
        direction: str = "generative",
        input_dim: Optional[int] = None,
        output_dim: int = 10,
        T_infer: int = 50,
        eta_infer: float = 0.05,
        T_infer_eval: Optional[int] = None,
        eta_infer_eval: Optional[float] = None,
        t_learn: int = 1,
        eta_learn: Union[float, list[float]] = 0.005,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_scheduler: Optional[str] = None,
        lr_step_epochs: int = 10,
        latent_init: str = "random",
        latent_init_std: float = 0.1,
        settle_tol: Optional[float] = None,
        divergence_factor: float = 100.0,
        grad_clip_norm: Optional[float] = None,
        precisions: Optional[list[float]] = None,
        eval_mode: str = "readout",
        amortized: bool = False,
        eta_amort: float = 0.001,
        readout_learning: str = "clamped",
        learn_precision: bool = False,
        eta_precision: float = 0.01,
        compile_settle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        dims = list(dims)
        if input_dim is not None and len(dims) >= 1 and dims[0] != input_dim:
            raise ConfigError(
                f"dims[0]={dims[0]} but the data has {input_dim} inputs per sample; "
                f"set --model.dims so that it starts with {input_dim}"
            )
        self.net = PredictiveCodingNetwork(dims, output_dim, activations, direction, amortized)
        self.T_infer = _positive_int("T_infer", T_infer)
        self.eta_infer = _positive_float("eta_infer", eta_infer)
        self.T_infer_eval = _positive_int("T_infer_eval", T_infer_eval or T_infer)
        self.eta_infer_eval = _positive_float("eta_infer_eval", eta_infer_eval or eta_infer)
        self.t_learn = _positive_int("t_learn", t_learn)
        n_groups = self.net.n_layers + 1
        etas = [eta_learn] * n_groups if isinstance(eta_learn, (int, float)) else list(eta_learn)
        if len(etas) != n_groups:
            raise ConfigError(
                f"eta_learn has {len(etas)} entries; give one number or {n_groups} "
                f"(one per weight matrix W(0..{n_groups - 2}) and one for the readout)"
            )
        self.etas = [_positive_float("eta_learn", e) for e in etas]
        if precisions is not None:
            if len(precisions) != n_groups:
                raise ConfigError(
                    f"precisions has {len(precisions)} entries; give {n_groups} (one per weight "
                    "matrix and one for the readout, in the order of eta_learn)"
                )
            precisions = [_positive_float("precisions", p) for p in precisions]
        self.precisions = precisions
        if learn_precision:
            _positive_float("eta_precision", eta_precision)
            start = torch.tensor(precisions or [1.0] * n_groups, dtype=torch.float32)
            self.log_precision = torch.nn.Parameter(start.log())
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if lr_scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown lr_scheduler {lr_scheduler!r}; choose one of {list(SCHEDULERS)}")
        if latent_init not in LATENT_INITS:
            raise ConfigError(f"unknown latent_init {latent_init!r}; choose one of {list(LATENT_INITS)}")
        if latent_init == "amortized" and not amortized:
            raise ConfigError("latent_init='amortized' needs amortized=True")
        if latent_init == "feedforward" and self.net.generative:
            raise ConfigError(
                "latent_init='feedforward' needs direction='discriminative': the "
                "generative model has no bottom-up pass; use 'random' or 'zeros'"
            )
        if eval_mode not in ("readout", "energy"):
            raise ConfigError(f"unknown eval_mode {eval_mode!r}; choose 'readout' or 'energy'")
        if eval_mode == "energy" and not self.net.generative:
            raise ConfigError("eval_mode='energy' needs direction='generative'")
        if readout_learning not in ("clamped", "label_free"):
            raise ConfigError(f"unknown readout_learning {readout_learning!r}; choose 'clamped' or 'label_free'")
        if readout_learning == "label_free" and not self.net.generative:
            raise ConfigError(
                "readout_learning='label_free' needs direction='generative' (the discriminative "
                "readout already learns from the exact label-free state, the feedforward sweep)"
            )
        if settle_tol is not None:
            _positive_float("settle_tol", settle_tol)
        _positive_float("divergence_factor", divergence_factor)
        if grad_clip_norm is not None:
            _positive_float("grad_clip_norm", grad_clip_norm)
        self._reference_energy: Optional[float] = None
        # Measured by the last training step, for callbacks: per-layer energies
        # (per sample) and the norm of each parameter's update.
        self.last_layer_energies: Optional[Tensor] = None
        self.last_settle_steps: int = 0
        self._epoch_energy: Optional[Tensor] = None  # sums over the epoch, logged at its end
        self._make_metrics()

    def _make_metrics(self) -> None:
        C = self.net.output_dim
        self.metrics = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            self.metrics[f"{stage}_acc_top1"] = MulticlassAccuracy(C, top_k=1, average="micro")
            if C >= 3:
                self.metrics[f"{stage}_acc_top3"] = MulticlassAccuracy(C, top_k=3, average="micro")
            self.metrics[f"{stage}_energy"] = MeanMetric()

    # ------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        hp = self.hparams
        etas = self.etas + [_positive_float("eta_amort", hp.eta_amort)] * len(self.net.amort)
        groups = [{"params": [p], "lr": lr} for p, lr in zip(self.net.parameters_in_update_order(), etas)]
        if hp.learn_precision:
            groups.append({"params": [self.log_precision], "lr": _positive_float("eta_precision", hp.eta_precision)})
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=self.etas[0], momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            # the fused kernel (one pass per parameter) where the device has it: on a
            # small model the unfused Adam took ~9 % of a training step
            fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters()) or None
            cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
            opt = cls(groups, lr=self.etas[0], weight_decay=hp.weight_decay, fused=fused)
        if hp.lr_scheduler is None:
            return opt
        if hp.lr_scheduler == "cosine":
            T_max = max(1, self.trainer.max_epochs or 1) if self._trainer is not None else 1
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_max)
        else:
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_epochs, gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["pcn_reference_energy"] = self._reference_energy

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._reference_energy = checkpoint.get("pcn_reference_energy")

    # ---------------------------------------------------------------- helpers
    def group_precisions(self) -> Optional[list[float]]:
        """The precision of each energy term in the order of eta_learn (None: all 1)."""
        if self.hparams.learn_precision:
            return self.log_precision.detach().exp().tolist()
        return self.precisions

    def chain_precisions(self) -> dict:
        """Precisions in the chain's order, as keyword arguments for the equations."""
        pis = self.group_precisions()
        if pis is None:
            return {"precisions": None, "precision_y": 1.0}
        n = self.net.n_layers
        if self.net.generative:
            return {"precisions": pis[:n], "precision_y": pis[n]}
        return {"precisions": [pis[n]] + pis[:n][::-1], "precision_y": 1.0}

    def _chain_to_groups(self, values: Tensor) -> Tensor:
        """Per-term values from the chain's order (`layer_energies`) to eta_learn's."""
        if self.net.generative:
            return values
        return torch.cat([values[1:].flip(0), values[:1]])

    def _generator(self, *keys: int) -> torch.Generator:
        """A CPU generator seeded from the module seed and the given keys."""
        seed = int(self.hparams.seed)
        for k in keys:
            seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
        return torch.Generator().manual_seed(seed)

    def _flatten_batch(self, batch) -> tuple[Tensor, Tensor]:
        x, y = batch
        return x.flatten(1), y

    def settle_batch(
        self,
        x: Tensor,
        y: Optional[Tensor],
        T_infer: Optional[int] = None,
        eta_infer: Optional[float] = None,
        record: bool = False,
        tol: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[list[Tensor], eq.SettleResult]:
        """Settle the latents on a batch; y (class indices) clamps the label when given.

        Generative with y=None is label-free inference (evaluation). The
        discriminative chain needs y: without it the exact settled state is the
        feedforward sweep (see `predict_logits`).
        """
        Y = F.one_hot(y, self.net.output_dim).to(x.dtype) if y is not None else None
        with torch.no_grad():
            xs, free = self.net.initial_state(
                x, Y, self.hparams.latent_init, self.hparams.latent_init_std, generator
            )
            weights, acts, readout = self.net.chain()
            result = eq.settle(
                xs, weights, acts, free,
                T_infer or self.T_infer, eta_infer or self.eta_infer,
                readout=readout, y=Y if self.net.generative else None,
                record=record, tol=tol, compiled=self.hparams.compile_settle, **self.chain_precisions(),
            )
        return xs, result

    def predict_logits(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Label-free prediction: readout scores of shape (B, C). No label is involved."""
        with torch.no_grad():
            if not self.net.generative:
                return self.net.feedforward(x)[-1]
            if self.hparams.eval_mode == "energy":  # the same rule as evaluation
                return self.classify_by_energy(x, generator)[0]
            xs, _ = self.settle_batch(
                x, None, self.T_infer_eval, self.eta_infer_eval, generator=generator
            )
            return self.net.top_latent(xs) @ self.net.readout.T

    # -------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        x, y = self._flatten_batch(batch)
        B = x.shape[0]
        gen = self._generator(self.global_step, self.global_rank)
        xs, result = self.settle_batch(x, y, tol=self.hparams.settle_tol, generator=gen)
        per_layer = eq.layer_energies(result.errors) / B
        self._check_divergence(per_layer, result)
        weights, acts, readout = self.net.chain()
        Y = F.one_hot(y, self.net.output_dim).to(x.dtype) if self.net.generative else None
        errors = result.errors
        x_top_free = None
        if self.hparams.readout_learning == "label_free":  # the state evaluation will read
            xs_free, _ = self.settle_batch(
                x, None, self.T_infer_eval, self.eta_infer_eval, generator=self._generator(self.global_step, self.global_rank, 1)
            )
            x_top_free = xs_free[-1]
        opt = self.optimizers()
        with torch.no_grad():
            for k in range(self.t_learn):
                if k > 0:  # the weights moved: the frozen latents' errors must be recomputed
                    errors = eq.prediction_errors(xs, weights, acts, readout, Y, **self.chain_precisions())
                grads, grad_readout = eq.weight_gradients(xs, errors)
                if x_top_free is not None:
                    pi_y = self.chain_precisions()["precision_y"]
                    grad_readout = eq.readout_gradient(x_top_free, readout, Y, pi_y)
                if grad_readout is not None:
                    grads.append(grad_readout)
                params = self.net.chain_parameters()
                if self.net.amortized:  # the bottom-up guess learns the settled latents
                    grads += eq.amortization_gradients(xs, self.net.amort, self.net.amort_acts)
                    params += list(self.net.amort)
                if self.hparams.learn_precision:  # each precision tracks its term's error
                    grads.append(self._chain_to_groups(eq.precision_gradients(errors)))
                    params.append(self.log_precision)
                self._apply_gradients(params, grads, B)
                if self.hparams.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.hparams.grad_clip_norm)
                opt.step()
        self.last_layer_energies = per_layer.detach()
        self.last_settle_steps = result.steps
        self._accumulate_train_logs(per_layer.detach(), result.steps)

    def _apply_gradients(self, params: Sequence[torch.nn.Parameter], grads: Sequence[Tensor], B: int) -> None:
        """p.grad = dE/dW / B, averaged over DDP ranks in one flat all-reduce."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= dist.get_world_size() * B
            offset = 0
            for p in params:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n
            return
        for p, g in zip(params, grads):
            p.grad = g.div_(B)  # the gradient was made for this step: scale it in place

    def _check_divergence(self, per_layer: Tensor, result: eq.SettleResult) -> None:
        """Raise (before any weight moves) when the energy is NaN/inf or exploding."""
        names = self.layer_names()
        values = per_layer.tolist()
        total = sum(values)
        step = self.global_step
        for name, v in zip(names, values):
            if not math.isfinite(v):
                raise DivergenceError(
                    f"the energy of {name} became {v} at training step {step}; the weights "
                    "were not updated. Lower eta_infer (inference diverged) or eta_learn, "
                    "or use a linear activation for layer 0 when inputs are normalized."
                )
        factor = self.hparams.divergence_factor
        if self._reference_energy is None:
            self._reference_energy = max(total, 1e-12)
        elif total > factor * self._reference_energy:
            worst = names[max(range(len(values)), key=values.__getitem__)]
            raise DivergenceError(
                f"the energy per sample grew to {total:.4g}, over {factor:g}x the first "
                f"batch's {self._reference_energy:.4g}, at training step {step} "
                f"(largest in {worst}); the weights were not updated. Lower eta_learn "
                "(or the per-layer rate of that layer) or eta_infer."
            )

    def layer_names(self) -> list[str]:
        """Names of the energy terms, in the order of `layer_energies`."""
        n = self.net.n_layers
        if self.net.generative:
            return [f"layer{l}" for l in range(n)] + ["readout"]
        # chain layer 0 is the label, predicted by the readout; chain layer k the
        # hidden layer n + 1 - k (layer j is the j-th above the input)
        return ["readout"] + [f"layer{n + 1 - k}" for k in range(1, n + 1)]

    def _accumulate_train_logs(self, per_layer: Tensor, steps: int) -> None:
        """Sum the epoch's energies on the device; call self.log only on the steps
        Lightning writes (every log_every_n_steps): each self.log call costs about
        a millisecond of Python, a few percent of a small model's step."""
        if self._epoch_energy is None:
            self._epoch_energy, self._epoch_batches, self._epoch_settle_steps = torch.zeros_like(per_layer), 0, 0
        self._epoch_energy += per_layer
        self._epoch_batches += 1
        self._epoch_settle_steps += steps
        writes = self._trainer is not None and getattr(self.trainer._logger_connector, "should_update_logs", True)
        if writes:
            self.log("train/energy_step", per_layer.sum(), prog_bar=True, on_step=True, on_epoch=False)
            if self.hparams.settle_tol is not None:
                self.log("train/settle_steps_step", float(steps), on_step=True, on_epoch=False)

    def _log_train_epoch(self) -> None:
        """The epoch means of the training energies (per sample), settle steps, precisions."""
        if self._epoch_energy is None:
            return
        mean = self._epoch_energy / self._epoch_batches
        self.log("train/energy_epoch", mean.sum(), on_step=False, on_epoch=True, sync_dist=True)
        for name, v in zip(self.layer_names(), mean):
            self.log(f"train/energy_{name}", v, on_step=False, on_epoch=True, sync_dist=True)
        if self.hparams.settle_tol is not None:
            steps = self._epoch_settle_steps / self._epoch_batches
            self.log("train/settle_steps_epoch", steps, on_step=False, on_epoch=True, sync_dist=True)
        if self.hparams.learn_precision:
            names = self.layer_names()
            for c, pi in zip(self._chain_to_groups(torch.arange(len(names))).tolist(), self.log_precision.detach().exp()):
                self.log(f"precision/{names[c]}", pi, on_step=False, on_epoch=True)
        self._epoch_energy = None

    # ------------------------------------------------------------ evaluation
    def classify_by_energy(self, x: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Scores -E_c(x) for every class c: clamp c at the readout, settle, measure E.

        No label is given: every class is tried and the lowest settled energy
        wins. Returns (scores (B, C), the lowest energy per sample).
        """
        C = self.net.output_dim
        energies = []
        for c in range(C):
            y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            gen = None if generator is None else torch.Generator().manual_seed(generator.initial_seed() + c)
            _, result = self.settle_batch(x, y, self.T_infer_eval, self.eta_infer_eval, generator=gen)
            energies.append(eq.sample_energies(result.errors))
        E = torch.stack(energies, 1)
        return -E, E.min(1).values.mean()

    @torch.no_grad()
    def class_prototypes(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean settled top latent of each class, shape (C, d_L), from labelled data
        settled as in training (the label clamped). Classes absent from y get the
        least-norm top latent whose readout is that class."""
        xs, _ = self.settle_batch(x.flatten(1), y, generator=torch.Generator().manual_seed(0))
        top = self.net.top_latent(xs)
        R = self.net.readout
        protos = torch.eye(self.net.output_dim, dtype=R.dtype, device=R.device) @ torch.linalg.pinv(R).T
        for c in range(self.net.output_dim):
            if (y == c).any():
                protos[c] = top[y == c].mean(0)
        return protos

    @torch.no_grad()
    def generate(
        self,
        classes: Tensor,
        noise_std: float = 0.0,
        generator: Optional[torch.Generator] = None,
        prototypes: Optional[Tensor] = None,
    ) -> Tensor:
        """Generative model: the data (B, dims[0]) it predicts for the given classes.

        The top latent is clamped to the class's prototype (from `class_prototypes`,
        when given) or else to the least-norm x(L) whose readout is the class
        (R x(L) = one_hot(c)), plus optional Gaussian noise for variety; the
        predictions then run down to the pixels (every error zero).
        """
        if not self.net.generative:
            raise ConfigError("generate() needs direction='generative'")
        R = self.net.readout
        if prototypes is not None:
            top = prototypes.to(R.device)[classes.to(R.device)]
        else:
            Y = F.one_hot(classes.to(R.device), self.net.output_dim).to(R.dtype)
            top = Y @ torch.linalg.pinv(R).T
        if noise_std > 0:
            top = top + noise_std * torch.randn(top.shape, generator=generator, dtype=top.dtype).to(top.device)
        weights, acts, _ = self.net.chain()
        return eq.top_down_sweep(top, weights, acts)[0]

    def eval_outputs(self, x: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Label-free (logits, energy per sample) of an evaluation batch."""
        if not self.net.generative:
            # the sweep is the exact minimum of the energy with the label free: E = 0
            return self.predict_logits(x), torch.zeros((), device=x.device)
        gen = self._generator(10**6 + batch_idx, self.global_rank)
        if self.hparams.eval_mode == "energy":
            return self.classify_by_energy(x, gen)
        xs, result = self.settle_batch(x, None, self.T_infer_eval, self.eta_infer_eval, generator=gen)
        logits = self.net.top_latent(xs) @ self.net.readout.T
        return logits, eq.energy(result.errors) / x.shape[0]

    def _eval_step(self, stage: str, batch, batch_idx: int) -> Tensor:
        x, y = self._flatten_batch(batch)
        logits, energy = self.eval_outputs(x, batch_idx)  # y never reaches inference
        for name, metric in self.metrics.items():
            if not name.startswith(stage):
                continue
            if name.endswith("energy"):
                metric.update(energy)
            else:
                metric.update(logits, y)
            self.log(f"{stage}/{name[len(stage) + 1:]}", metric, on_step=False, on_epoch=True, prog_bar=name.endswith("top1"))
        return logits

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("test", batch, batch_idx)

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.eval_outputs(x.flatten(1), batch_idx)[0]
