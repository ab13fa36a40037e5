"""`PCNModule`: the LightningModule that orchestrates settling and local learning.

The math lives elsewhere (primitives, terms, `inference.settle`, `rules`); this
module wires it to Lightning: manual optimization, hand-set gradients
(`p.grad = dE/dtheta / B`), the optimizer step (so `global_step`, checkpoints and
`max_steps` work), an explicit all-reduce under DDP, logging, and label-free
evaluation. A training step reads: settle, guard, each rule's gradients,
all-reduce, optimizer step.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from pcn_lightning import generation, rules, seeding
from pcn_lightning.builders import NetworkSpec, build_network, twin_forward
from pcn_lightning.errors import ConfigError
from pcn_lightning.export import export_predictor
from pcn_lightning.guard import DivergenceGuard
from pcn_lightning.epc import check_supported, settle_by_state
from pcn_lightning.inference import SettleResult
from pcn_lightning.metrics import classification_metrics, log_metrics
from pcn_lightning.optim import attached_trainer
from pcn_lightning.flat import from_flat
from pcn_lightning.settings import EvalInference, Inference, Learning, as_settings
from pcn_lightning.step import Gradients, ModelBase, apply_gradients, local_gradients
from pcn_lightning.timing import Nudged, guard_start, settle_for_learning, timing_for

Tensor = torch.Tensor


class PCNModule(ModelBase):
    """A predictive coding network trained by local rules under Lightning.

    Args:
        network: the network description (`NetworkSpec`: direction, dims or layers, ...).
        inference: how latents settle in training (`Inference`).
        eval_inference: how they settle at evaluation; unset fields follow training.
        learning: optimizer, learning rates, schedule and rules (`Learning`).
        eval_mode: "readout" (settle from the input, read the label's node) or
            "energy" (clamp each class in turn; the lowest settled energy wins).
        divergence_factor: stop training when a settle ends this many times above
            where it started, or the energy per sample exceeds this multiple of the
            lowest seen so far.
        seed: seed of every latent initialization (see `seeding`).
        input_shape, output_dim: the data's sample shape and number of classes
            (linked from the data by the command line).
    """

    def __init__(self, network: NetworkSpec, inference: Inference = Inference(),
                 eval_inference: EvalInference = EvalInference(), learning: Learning = Learning(),
                 eval_mode: str = "readout", divergence_factor: float = 100.0, seed: int = 0,
                 input_shape: Optional[list[int]] = None, output_dim: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        network, inference = as_settings(network, NetworkSpec), as_settings(inference, Inference)
        eval_inference, learning = as_settings(eval_inference, EvalInference), as_settings(learning, Learning)
        if eval_mode not in ("readout", "energy"):
            raise ConfigError(f"unknown eval_mode {eval_mode!r}; choose 'readout' or 'energy'")
        shape = input_shape or [network.dims[0] if network.dims else 784]
        self.net = build_network(network, shape, output_dim)
        self.inference, self.learning = inference, learning
        self.eval_inference = eval_inference.resolve(inference)
        for settings in (self.inference, self.eval_inference):
            self.net.check_init(settings.latent_init)
        if inference.state == "errors":
            check_supported(self.net)
        self.timing = timing_for(learning)  # what the settle clamps, which errors learn, their scale
        self.timing.check(inference, learning)
        self.eval_mode, self.seed = eval_mode, seed
        self.guard = DivergenceGuard(divergence_factor)
        self.rates = learning.rates(len(self.net.terms))
        if learning.learn_precision:
            for t in self.net.terms:
                t.learn_precision(() if learning.precision_shape == "scalar" else self.net.nodes[t.target].shape)
        # the precision of the label-free prediction: class probabilities softmax(pi * prediction)
        if learning.predictive_precision:
            self.predictive_log_precision = torch.nn.Parameter(torch.zeros(()))
        else:  # not learned: pi = 1
            self.register_buffer("predictive_log_precision", torch.zeros(()), persistent=False)
        self.rules = rules.rules_for(self.net, learning, self.predictive_log_precision)
        self.last_term_energies: Optional[Tensor] = None  # per sample, of the last training step
        self.last_settle_steps = 0
        self._epoch_sums: Optional[Tensor] = None
        self.metrics = classification_metrics(self.net.num_classes, energy=True)

    @classmethod
    def from_flat(cls, **kwargs) -> "PCNModule":
        """Build from flat settings, as on the command line: PCNModule.from_flat(dims=[784, 256], T_infer=20)."""
        return from_flat(cls, kwargs)

    @property
    def term_names(self) -> list[str]:
        return self.net.term_names

    def named_weights(self) -> list[tuple[str, torch.nn.Parameter]]:
        return self.net.named_weights()

    def terms_learned_from_settle(self) -> list[int]:
        """The terms whose weights learn from the label-clamped settle (the Hebbian rule's)."""
        return [k for r in self.rules if isinstance(r, rules.Hebbian) for k in r.terms]

    # ------------------------------------------------------------ optimizers
    def optimizer_rules(self) -> list[rules.Rule]:
        return self.rules

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()
        self.step_lr_schedule()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["pcn_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.guard.load_state_dict(checkpoint.get("pcn_guard", {}))

    def _refresh_precisions(self) -> None:
        if self.learning.learn_precision:
            for t in self.net.terms:
                t.refresh_precision()

    # ------------------------------------------------------------- settling
    def _label(self, y: Tensor, like: Tensor) -> Tensor:
        return F.one_hot(y, self.net.num_classes).to(like.dtype)

    @torch.no_grad()
    def settle_batch(self, x: Tensor, y: Optional[Tensor], settings: Optional[Inference] = None,
                     record: bool = False, generator: Optional[torch.Generator] = None,
                     per_sample_seeds: bool = False, nudge: Optional[float] = None) -> tuple[list[Tensor], SettleResult]:
        """Settle a batch; `y` (class indices) clamps the label, None leaves it free.
        `nudge` b (with `y`): the label node is clamped at u + b (y - u), u the feedforward
        prediction of the label (`timing.Nudged`)."""
        settings = settings or self.inference
        start = self.initial_state(x, y, settings, generator, per_sample_seeds, nudge)
        return start.xs, settle_by_state(self.net, start.xs, start.free, settings, record, start.predictions)

    def initial_state(self, x: Tensor, y: Optional[Tensor], settings: Inference,
                      generator: Optional[torch.Generator] = None, per_sample_seeds: bool = False,
                      nudge: Optional[float] = None):
        """Where a settle of the batch starts (`PCNetwork.initial_state`), the label clamped
        (at its nudged target with `nudge`), or free without `y`."""
        self._refresh_precisions()
        x = self.net.batch_input(x)
        seeds = seeding.sample_seeds(self.seed, x) if per_sample_seeds else None
        start = self.net.initial_state(x, None if y is None else self._label(y, x), settings.latent_init,
                                       settings.latent_init_std, generator, seeds)
        if nudge is not None and y is not None:
            start.xs[self.net.label] = self.timing.label_target(start.xs[self.net.label],
                                                                self.net.label_prediction(start.xs), nudge)
        return start

    def settle_probe(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[list[Tensor], SettleResult]:
        """A diagnostic settle like training's (label clamped, or nudged by +beta), recording every step."""
        nudge = self.timing.beta if isinstance(self.timing, Nudged) else None
        return self.settle_batch(x, y, record=True, generator=generator, nudge=nudge)

    def feedforward_state(self, x: Tensor) -> list[Optional[Tensor]]:
        """The latents of one prediction sweep from the data (None where it does not reach)."""
        return self.net.initial_state(self.net.batch_input(x), None, "feedforward").xs

    def backprop_gradients(self, x: Tensor, y: Tensor) -> dict:
        """{parameter: d loss / d parameter} of the twin's loss (the label term's energy at
        the feedforward prediction, times its precision) on the same weights, by autograd:
        a diagnostic for SettleCheck (how close the local updates are to backprop's), never
        used for learning."""
        term = self.net.terms[self.net.label_term]
        with torch.enable_grad():
            scores = twin_forward(self.net, x, logits=term.energy_fn.name == "categorical")
            target = self._label(y, scores)
            loss = (F.cross_entropy(scores, y, reduction="sum") if term.energy_fn.name == "categorical"
                    else 0.5 * (target - scores).square().sum())
            params = [p for p in self.net.terms.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return {p: g for p, g in zip(params, grads) if g is not None}

    # -------------------------------------------------------------- training
    @torch.no_grad()
    def settle_for_learning(self, x: Tensor, y: Tensor) -> tuple[rules.SettledBatch, SettleResult]:
        """The batch settled with its label clamped, as training settles it (the step's
        seeded generator), and what the rules read from it (the label-free settle
        that some rules need runs on first use)."""
        gen = seeding.training_generator(self.seed, self.global_step, self.global_rank)
        b = self.timing.sign(self.seed, self.global_step, self.current_epoch)
        start = self.initial_state(x, y, self.inference, gen, nudge=b if isinstance(self.timing, Nudged) else None)

        def label_free_state() -> list[Tensor]:
            g = seeding.training_generator(self.seed, self.global_step, self.global_rank, 1)
            return self.settle_batch(x, None, self.eval_inference, generator=g)[0]

        return settle_for_learning(self.net, start, self.inference, self.timing, b, label_free_state=label_free_state)

    def local_gradients(self, x: Tensor, y: Tensor) -> Gradients:
        """(parameter, dE/dparameter summed over the batch) for every learned parameter:
        the gradients one training step hands to the optimizer (divided by the batch size)."""
        return local_gradients(self.rules, self.settle_for_learning(x, y)[0])

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        B = x.shape[0]
        settled, result = self.settle_for_learning(x, y)
        per_term = self.net.energies(result.errors) / B
        self.guard.check(per_term, guard_start(self.timing, result, B), self.term_names, self.global_step)
        opt = self.optimizers()
        with torch.no_grad():
            for k in range(self.learning.t_learn):
                if k > 0:  # the weights moved: the frozen latents' errors change
                    settled.errors = self.net.errors(settled.xs, result.active)
                apply_gradients(opt, local_gradients(self.rules, settled), B, self.learning.grad_clip_norm,
                                self.net.terms.parameters())
                self._refresh_precisions()
        self.last_term_energies = per_term.detach()
        self.last_settle_steps = result.steps
        self._accumulate_train_logs(per_term.detach(), result.steps)

    def _accumulate_train_logs(self, per_term: Tensor, steps: int) -> None:
        """Sum the epoch's energies on the device; self.log (about a millisecond of
        Python each) only on the steps Lightning writes."""
        if self._epoch_sums is None:
            self._epoch_sums, self._epoch_batches, self._epoch_steps = torch.zeros_like(per_term), 0, 0
        self._epoch_sums += per_term
        self._epoch_batches += 1
        self._epoch_steps += steps
        trainer = attached_trainer(self)
        every = trainer.log_every_n_steps if trainer is not None else 1
        if self.global_step % every == 0:
            self.log("train/energy_step", per_term.sum(), prog_bar=True, on_step=True, on_epoch=False)
            if self.inference.settle_tol is not None:
                self.log("train/settle_steps_step", float(steps), on_step=True, on_epoch=False)

    def _log_train_epoch(self) -> None:
        if self._epoch_sums is None:
            return
        mean = self._epoch_sums / self._epoch_batches
        self.log("train/energy_epoch", mean.sum(), on_step=False, on_epoch=True, sync_dist=True)
        for name, v in zip(self.term_names, mean):
            self.log(f"train/energy_{name}", v, on_step=False, on_epoch=True, sync_dist=True)
        if self.inference.settle_tol is not None:
            self.log("train/settle_steps_epoch", self._epoch_steps / self._epoch_batches, on_epoch=True, sync_dist=True)
        if self.learning.learn_precision:
            for t in self.net.terms:
                self.log(f"precision/{t.name}", float(torch.as_tensor(t.pi).mean()), on_step=False, on_epoch=True)
        if self.learning.predictive_precision:
            self.log("precision/predictive", self.predictive_log_precision.detach().exp(), on_step=False, on_epoch=True)
        self._epoch_sums = None

    # ------------------------------------------------------------ evaluation
    def predict_logits(self, x: Tensor) -> Tensor:
        """Label-free class scores (B, C) for inputs of the data's shape (any floating dtype,
        device or layout; see `PCNetwork.checked_input`). No label is involved."""
        x = self.net.checked_input(x)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.net.num_classes)
        return self.eval_outputs(x)[0]

    @torch.no_grad()
    def eval_outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Label-free (logits, mean energy per sample) of a batch."""
        if self.eval_mode == "energy":
            scores = self.classify_by_energy(x)
            return scores, (-scores.max(1).values).mean()
        xs, result = self.settle_batch(x, None, self.eval_inference, per_sample_seeds=True)
        energy = self.net.energies(result.errors).sum() / x.shape[0] if any(result.active) else x.new_zeros(())
        return xs[self.net.label], energy

    @torch.no_grad()
    def classify_by_energy(self, x: Tensor) -> Tensor:
        """Scores -E_c(x) for every class c: clamp c, settle, measure E (C settles)."""
        energies = []
        for c in range(self.net.num_classes):
            y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            _, result = self.settle_batch(x, y, self.eval_inference, per_sample_seeds=True)
            energies.append(self.net.sample_energies(result.errors))
        return -torch.stack(energies, 1)

    def _eval_step(self, stage: str, batch) -> Tensor:
        x, y = batch
        logits, energy = self.eval_outputs(x)  # y never reaches inference
        log_metrics(self, stage, logits, y, energy)
        return logits

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("test", batch)

    def predict_step(self, batch, batch_idx: int) -> dict:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict_uncertainty(x)

    @torch.no_grad()
    def predict_uncertainty(self, x: Tensor) -> dict:
        """Label-free outputs with their uncertainty, for a batch of inputs:

        - `logits`: the label's predicted values (B, C), as `predict_logits`;
        - `probs`: class probabilities softmax(pi * logits), pi the learned precision of
          the label-free prediction (`predictive_precision`; 1 when not learned);
        - `energy`: each sample's settled energy (B,), how badly the network explains it
          (a generative network predicts the data; a discriminative one explains any
          input exactly when its label is free, so there this is 0 by construction);
        - `term_energies`: each term's precision-weighted error per sample (B, terms);
        - `committed_energy`: the settled energy with the network's own top class
          clamped as the label (settled as in training; no true label is used): what
          committing to its decision costs, (B,). One more settle.
        """
        x = self.net.checked_input(x)
        if x.shape[0] == 0:
            empty = x.new_zeros(0, self.net.num_classes)
            return {"logits": empty, "probs": empty.clone(), "energy": x.new_zeros(0),
                    "term_energies": x.new_zeros(0, len(self.net.terms)), "committed_energy": x.new_zeros(0)}
        xs, result = self.settle_batch(x, None, self.eval_inference, per_sample_seeds=True)
        logits = xs[self.net.label]
        term_energies = self.net.term_sample_energies(result.errors, logits)
        _, committed = self.settle_batch(x, logits.argmax(1), self.inference, per_sample_seeds=True)
        return {"logits": logits, "probs": self.class_probabilities(logits), "energy": term_energies.sum(1),
                "term_energies": term_energies,
                "committed_energy": self.net.term_sample_energies(committed.errors, logits).sum(1)}

    def class_probabilities(self, logits: Tensor) -> Tensor:
        """softmax(pi * prediction): the classes' posterior under the Gaussian label model
        with the learned precision pi of the label-free prediction (1 when not learned)."""
        return torch.softmax(self.predictive_log_precision.detach().exp() * logits, 1)

    def export(self, example: Optional[Tensor] = None) -> torch.nn.Module:
        """The label-free predictor as a plain torch module (see `export.export_predictor`)."""
        return export_predictor(self, example)

    # ------------------------------------------------------------ generation
    def class_prototypes(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean settled top latent per class (see `generation.class_prototypes`)."""
        return generation.class_prototypes(self, x, y)

    def generate(self, classes: Tensor, noise_std: float = 0.0, generator: Optional[torch.Generator] = None,
                 prototypes: Optional[Tensor] = None) -> Tensor:
        """Data predicted for each class (generative networks; see `generation.generate`)."""
        return generation.generate(self.net, classes, noise_std, generator, prototypes)
