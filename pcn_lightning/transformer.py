"""A predictive coding transformer language model: local rules only.

The network is an ordinary discriminative PCNetwork whose nodes are sequences
(per-sample shape (positions, width)), described in the config as a list of
blocks like any other network:

    input   one-hot characters c(1..T)                       (T, V)   clamped
    layer1  token embedding + learned positions              (T, d)   latent
    layer2.. one `transformer_block` each (attention, MLP)    (T, d)   latents
    label   the next characters c(2..T+1)                    (T, V)   clamped in training

The label term is categorical over the vocabulary at every position,
E_label = -pi sum_t log softmax(logits_t)[c(t+1)], and causal attention keeps each
position's prediction a function of its past. Every latent starts at its
feedforward prediction; inference settles the latents with the label clamped
(`inference.settle`), and every weight learns from its term's error by the rule
written out in its primitive (`rules.Hebbian`): no autograd, no `.backward()`.
With one sequential sweep at step 1 and errors on arrival (the shipped config),
each update is backprop's gradient times the label precision, exactly (tests).

Its twin (`TransformerTwin` in `twin.py`) is the same network, initialization,
optimizer and batches, trained by autograd on the cross-entropy.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from pcn_lightning.builders import NetworkSpec, build_network, expand_blocks
from pcn_lightning.errors import ConfigError
from pcn_lightning.guard import DivergenceGuard
from pcn_lightning.inference import SettleResult
from pcn_lightning.language import TextModelBase
from pcn_lightning.optim import attached_trainer
from pcn_lightning.primitives.dropout import batch_generator, dropout_masks
from pcn_lightning.primitives.transformer import TransformerBlock
from pcn_lightning.rules import Hebbian, SettledBatch
from pcn_lightning.timing import guard_start, settle_for_learning, timing_for
from pcn_lightning.settings import Inference, Learning, as_settings, positive_int
from pcn_lightning.step import Gradients, apply_gradients, local_gradients

Tensor = torch.Tensor

DEFAULT_LAYERS = [
    {"token_dense": {"units": 128}, "position": {}},  # token embedding and learned positions
    {"transformer_block": {"heads": 4}, "repeat": 4},
    {"rmsnorm": {}, "token_dense": {}},  # the next character's logits at every position
]


class SequenceModelBase(TextModelBase):
    """What the PC transformer and its twin share: the network built from `layers`, the
    one-hot inputs, the prediction sweep (`logits`), evaluation in bits per character,
    sampling and the attention maps."""

    def __init__(self, layers: Optional[list], context: int, label_precision: float, learning: Learning,
                 output_dim: int) -> None:
        super().__init__()
        self.context, self.vocab_size = positive_int("context", context), positive_int("output_dim", output_dim)
        layers = DEFAULT_LAYERS if layers is None else layers
        blocks = expand_blocks(layers)
        spec = NetworkSpec(direction="discriminative", layers=layers, label_energy="categorical",
                           precisions=[1.0] * (len(blocks) - 1) + [float(label_precision)])
        self.net = build_network(spec, [self.context, self.vocab_size], self.vocab_size)
        label_shape = self.net.nodes[self.net.label].shape
        if tuple(label_shape) != (self.context, self.vocab_size):
            raise ConfigError(f"the last block must predict the next character at every position, shape "
                              f"({self.context}, {self.vocab_size}); it predicts {tuple(label_shape)}: end the layers "
                              "with {rmsnorm: {}, token_dense: {}}")
        self.learning = learning
        self.rates = learning.rates(len(self.net.terms))

    # ------------------------------------------------------------ the maths
    def one_hot(self, ids: Tensor) -> Tensor:
        return F.one_hot(ids, self.vocab_size).to(next(self.net.parameters()).dtype)

    def check_length(self, ids: Tensor) -> None:
        if ids.dim() != 2 or ids.shape[1] != self.context:
            raise ConfigError(f"batches must hold {self.context} characters per row (the model's context); got shape "
                              f"{tuple(ids.shape)}: set --data.seq_len {self.context} or --model.context "
                              f"{ids.shape[-1]}")

    def sweep(self, ids: Tensor) -> list:
        """The prediction sweep from characters (B, T <= context) to the label's source:
        every node's value (the label's left None). Differentiable (the twin's forward)."""
        if ids.dim() != 2 or not 1 <= ids.shape[1] <= self.context:
            raise ConfigError(f"the model reads (batch, up to {self.context}) character ids; got shape {tuple(ids.shape)}")
        xs = [None] * len(self.net.nodes)
        xs[self.net.data] = self.one_hot(ids)
        self.net.sweep(xs, self.net.terms, [k for k in self.net.sweep_order if k != self.net.label_term])
        return xs

    def logits(self, ids: Tensor) -> Tensor:
        """The next character's logits at every position, (B, T, V), from the past only."""
        readout = self.net.terms[self.net.label_term]
        return readout.map.predict(self.sweep(ids)[readout.source])[0]

    def dropout_masks(self):
        """`with self.dropout_masks():` arms the network's dropout maps for one training
        batch, with masks drawn from (seed, step, rank) only: the PC model and its twin
        drop the same units, and a resumed run the ones it would have dropped."""
        seed = self.hparams.get("seed", 0)
        return dropout_masks(self.net, batch_generator(seed, self.global_step, self.global_rank, self.device))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = attached_trainer(self)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        seq_len = getattr(getattr(dm, "hparams", None), "seq_len", None)
        if seq_len is not None and seq_len != self.context:
            raise ConfigError(f"--data.seq_len {seq_len} differs from the model's context {self.context}: the "
                              f"transformer predicts windows of its context; set --data.seq_len {self.context} "
                              f"(or --model.context {seq_len})")

    @torch.no_grad()
    def _eval(self, stage: str, batch) -> None:
        x, y = batch
        self.check_length(x)
        logits = self.logits(x)
        self._add_nll(stage, F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"), y.numel())

    # ------------------------------------------------------------ what it writes and sees
    @torch.no_grad()
    def sample(self, prompt: str, chars: int, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> str:
        """Continue `prompt` by `chars` characters, each drawn from the prediction of the last
        `context` characters."""
        ids = self.encode(prompt or self.default_prompt())
        out = []
        for _ in range(chars):
            window = torch.tensor([ids[-self.context:]], device=self.device)
            i = self.draw(self.logits(window)[0, -1], temperature, generator)
            ids.append(i)
            out.append(self.vocab[i])
        return "".join(out)

    @torch.no_grad()
    def attention_maps(self, text: str) -> list[Tensor]:
        """Each transformer block's attention probabilities on `text` (its last `context`
        characters): one (heads, T, T) tensor per block, row t = where position t looks."""
        ids = torch.tensor([self.encode(text or self.default_prompt())[-self.context:]], device=self.device)
        xs = [None] * len(self.net.nodes)
        xs[self.net.data] = self.one_hot(ids)
        maps = []
        for k in self.net.sweep_order:
            t = self.net.terms[k]
            if t.target == self.net.label:
                continue
            a, ctx = t.map.predict(xs[t.source])
            xs[t.target] = t.act.f(a)
            if isinstance(t.map, TransformerBlock):
                maps.append(t.map.attention_probabilities(ctx)[0])
            elif any(isinstance(m, TransformerBlock) for m in t.map.modules()):
                raise ConfigError(f"{t.name}: attention maps are read from a transformer_block that is its block's "
                                  "only primitive (no skip: its residuals are inside)")
        return maps


class TransformerPCNModule(SequenceModelBase):
    """A predictive coding transformer over characters (local rules only).

    Args:
        layers: the blocks (see `DEFAULT_LAYERS`): an embedding block (`token_dense`
            and `position`), `transformer_block`s (heads, mlp_ratio, activation, norm,
            branch_scale, dropout, init_gain), and a readout block ending in
            `token_dense` (its units are the vocabulary's).
        context: characters per window (the data's `seq_len`).
        label_precision: precision of the categorical label energy.
        inference: settling with the next characters clamped (latents start at their
            prediction: `latent_init: feedforward`).
        learning: optimizer, rates, schedule; `weight_errors: on_arrival` with one
            sequential sweep at step 1 learns from each term's error when the sweep
            reaches it (backprop's gradient times the label precision, exactly).
        divergence_factor: stop training when an energy is not finite, or when the
            energy per character grows this many times over (`guard.DivergenceGuard`).
        input_shape, output_dim: linked from the data (one-hot characters, vocabulary size).
    """

    def __init__(self, layers: Optional[list] = None, context: int = 64, label_precision: float = 1.0,
                 inference: Inference = Inference(T_infer=1, eta_infer=1.0, latent_init="feedforward",
                                                  schedule="sequential"),
                 learning: Learning = Learning(eta_learn=0.001, optimizer="adamw", weight_errors="on_arrival"),
                 divergence_factor: float = 100.0, seed: int = 0, input_shape: Optional[list[int]] = None,
                 output_dim: int = 65) -> None:
        learning, inference = as_settings(learning, Learning), as_settings(inference, Inference)
        super().__init__(layers, context, label_precision, learning, output_dim)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if inference.latent_init != "feedforward":
            raise ConfigError("the transformer's latents start at their prediction: inference.latent_init 'feedforward'")
        if learning.beta is not None:
            raise ConfigError(f"{type(self).__name__} does not nudge its label (learning.beta); use label_precision")
        self.timing = timing_for(learning)
        self.timing.check(inference, learning)
        unsupported = [f"learning.{name} {value!r}" for name, value, default in (
            ("t_learn", learning.t_learn, 1), ("learn_precision", learning.learn_precision, False),
            ("predictive_precision", learning.predictive_precision, False),
            ("readout_learning", learning.readout_learning, Learning().readout_learning)) if value != default]
        if unsupported:
            raise ConfigError("the transformer learns every weight by its Hebbian rule once per batch; it does not "
                              "take " + ", ".join(unsupported) + " (remove them)")
        self.inference = inference
        self.hebbian = Hebbian(self.net, range(len(self.net.terms)))
        self.guard = DivergenceGuard(divergence_factor)
        self._epoch_sums: Optional[Tensor] = None  # each term's energy per character, summed over the epoch
        self._epoch_batches = 0

    @torch.no_grad()
    def settle_for_learning(self, x: Tensor, y: Tensor) -> tuple[SettledBatch, SettleResult, Tensor]:
        """The batch settled with the next characters clamped: what the rules read, the
        settle's result, and the summed cross-entropy (nats) of the feedforward prediction
        the settle started from (taken before settling, which writes over it)."""
        self.check_length(x)
        label = self.one_hot(y)
        start = self.net.initial_state(self.one_hot(x), label, "feedforward")
        readout = self.net.terms[self.net.label_term]
        start.predictions[self.net.label_term] = readout.map.predict(start.xs[readout.source])  # reused by settle
        logits = start.predictions[self.net.label_term][0]
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        settled, result = settle_for_learning(self.net, start, self.inference, self.timing)
        return settled, result, nll

    def local_gradients(self, x: Tensor, y: Tensor) -> Gradients:
        """(parameter, dE/dparameter summed over the batch's characters) of every weight."""
        return local_gradients([self.hebbian], self.settle_for_learning(x, y)[0])

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        n = y.numel()
        with self.dropout_masks():  # one mask per dropout map, held for the settle and the rules
            settled, result, nll = self.settle_for_learning(x, y)
            per_term = self.net.energies(result.errors) / n
            self.guard.check(per_term, guard_start(self.timing, result, n), self.net.term_names, self.global_step)
            with torch.no_grad():
                apply_gradients(self.optimizers(), local_gradients([self.hebbian], settled), n,
                                self.learning.grad_clip_norm)
                bits = nll / n / math.log(2)
        self.log("train/bits_per_char", bits, prog_bar=True, on_step=True, on_epoch=True)
        self._epoch_sums = per_term if self._epoch_sums is None else self._epoch_sums + per_term
        self._epoch_batches += 1

    def on_train_epoch_end(self) -> None:
        if self._epoch_sums is not None:  # each block's energy per character: where the error sits
            for name, v in zip(self.net.term_names, self._epoch_sums / self._epoch_batches):
                self.log(f"train/energy_{name}", v, on_step=False, on_epoch=True, sync_dist=True)
            self._epoch_sums, self._epoch_batches = None, 0
        self.step_lr_schedule()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["pcn_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.guard.load_state_dict(checkpoint.get("pcn_guard", {}))
