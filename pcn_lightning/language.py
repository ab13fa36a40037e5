"""Temporal predictive coding for language: a character model with local rules only.

At every character t (Millidge et al. 2024's temporal PC, here with a categorical
output energy):

    context(t) = [z(t-1), one-hot(c(t-k)), ..., one-hot(c(t-1))]     clamped
    z(t)       = tanh(W_z context(t) + b)                             predicted, then free
    c(t)       ~ softmax(W_out z(t) + b_out)                          E_out = -pi log p(c(t))

The latent z(t) starts at its prediction from the past (held fixed), settles with
the observed character c(t) clamped (T inference steps on pi/2 ||eps_z||^2 + E_out),
and every weight learns by its local rule from the settled errors: no
backpropagation through time, no autograd. The network of one step is an ordinary
discriminative PCNetwork (dense primitives, a categorical label term), so every
rule is the one tested against autograd there. The state carried to t+1 is the
prediction z(t) (`carry: predicted`, the same dynamics at training and at test,
where no character is ever seen before it is predicted) or the settled one
(`carry: settled`, the filtered state; at test, the settle after seeing c(t) uses
the character only once it is in the past).

`TemporalTwin` (in `twin.py`, beside the image twin) is the same network and parameters trained by backpropagation
through time over each batch's characters (the hidden state carried, detached,
across batches), with the same optimizer and number of updates.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from pcn_lightning.builders import NetworkSpec, build_network
from pcn_lightning.errors import ConfigError
from pcn_lightning.optim import attached_trainer
from pcn_lightning.rules import Hebbian
from pcn_lightning.timing import settle_for_learning, timing_for
from pcn_lightning.settings import Inference, Learning, as_settings, positive_int
from pcn_lightning.step import Gradients, ModelBase, apply_gradients, local_gradients

Tensor = torch.Tensor


class TextModelBase(ModelBase):
    """What every character model here shares: its vocabulary (from the data module, kept
    in checkpoints), validation and test in bits per character (`_eval` adds each batch's
    negative log-likelihood with `_add_nll`), and the prompt's encoding for sampling."""

    vocab_size: int

    def __init__(self) -> None:
        super().__init__()
        self.vocab: Optional[str] = None
        self._bits = {"train": [0.0, 0], "val": [0.0, 0], "test": [0.0, 0]}

    def _eval(self, stage: str, batch) -> None:
        raise NotImplementedError

    def _add_nll(self, stage: str, nll, count: int) -> None:
        """Add a batch's summed negative log-likelihood (nats) of `count` characters."""
        self._bits[stage][0] += float(nll) / math.log(2)
        self._bits[stage][1] += count

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval("test", batch)

    def _log_bits(self, stage: str) -> None:
        total, n = self._bits[stage]
        if n:
            value = torch.tensor(total / n, device=self.device)
            self.log(f"{stage}/bits_per_char", value, prog_bar=stage == "val", sync_dist=True)
        self._bits[stage] = [0.0, 0]

    def on_validation_epoch_end(self) -> None:
        self._log_bits("val")

    def on_test_epoch_end(self) -> None:
        self._log_bits("test")

    def setup(self, stage: str) -> None:
        trainer = attached_trainer(self)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and getattr(dm, "vocab", None) is None and hasattr(dm, "setup"):
            dm.setup(stage)
        if dm is not None and getattr(dm, "vocab", None):
            if len(dm.vocab) != self.vocab_size:
                raise ConfigError(f"the corpus has {len(dm.vocab)} characters but the model was built for {self.vocab_size}")
            self.vocab = dm.vocab

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vocab"] = self.vocab

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.vocab = checkpoint.get("vocab")

    def default_prompt(self) -> str:
        """What an empty prompt starts from: a new line (or the vocabulary's first character)."""
        return "\n" if self.vocab and "\n" in self.vocab else (self.vocab or "\n")[0]

    def encode(self, prompt: str) -> list[int]:
        """The prompt's character ids, or one clear error (no vocabulary, unknown characters)."""
        if not self.vocab:
            raise ConfigError("this model carries no vocabulary (trained without the text data module)")
        unknown = sorted(set(prompt) - set(self.vocab))
        if unknown:
            raise ConfigError(f"the prompt holds characters outside the corpus's vocabulary: {unknown}")
        index = {c: i for i, c in enumerate(self.vocab)}
        return [index[c] for c in prompt]

    @staticmethod
    def draw(logits: Tensor, temperature: float, generator: Optional[torch.Generator]) -> int:
        """A character id drawn from softmax(logits / temperature) (one position's logits, (V,))."""
        p = torch.softmax(logits.float() / max(temperature, 1e-6), 0).cpu()
        return int(torch.multinomial(p, 1, generator=generator))


class CharModelBase(TextModelBase):
    """What the PC model and its twin share: the network, the context, the state, evaluation."""

    def __init__(self, hidden: int, window: int, extra_layers: int, label_precision: float,
                 learning: Learning, output_dim: int, recurrent: bool = True) -> None:
        super().__init__()
        self.recurrent_input = bool(recurrent)
        self.hidden, self.window, self.vocab_size = positive_int("hidden", hidden), positive_int("window", window), output_dim
        if isinstance(extra_layers, bool) or not isinstance(extra_layers, int) or extra_layers < 0:
            raise ConfigError(f"extra_layers must be an integer >= 0; got {extra_layers!r}")
        layers = [{"dense": {"units": hidden, "bias": True}, "activation": "tanh"}]
        layers += [{"dense": {"units": hidden, "bias": True}, "activation": "tanh"}] * extra_layers
        layers.append({"dense": {"bias": True}})
        spec = NetworkSpec(direction="discriminative", layers=layers, label_energy="categorical",
                           precisions=[1.0] * (1 + extra_layers) + [float(label_precision)])
        self.net = build_network(spec, [hidden * self.recurrent_input + window * output_dim], output_dim)
        self.recurrent = self.net.terms[0].target  # the node z(t) carried to the next step
        self.learning = learning
        self.rates = learning.rates(len(self.net.terms))
        self._state: dict = {}

    # ---------------------------------------------------------- the context
    def reset_state(self, stage: str, batch: int) -> None:
        dtype = next(self.net.parameters()).dtype
        self._state[stage] = (torch.zeros(batch, self.hidden, device=self.device, dtype=dtype),
                              torch.zeros(batch, self.window, dtype=torch.long, device=self.device))

    def push(self, z: Tensor, win: Tensor, chars: Tensor) -> tuple[Tensor, Tensor]:
        """The newest input characters pushed into the window: the input [z(t-1), one-hot
        window] and the new window (a pure function of its arguments)."""
        win = torch.cat([win[:, 1:], chars[:, None]], 1)
        window = F.one_hot(win, self.vocab_size).to(z.dtype).flatten(1)
        return (torch.cat([z, window], 1) if self.recurrent_input else window), win

    def predict_next(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """The prediction sweep from the input `ctx`: the next character's logits and
        the new recurrent state z(t) (differentiable: the twin backpropagates through it)."""
        xs = [None] * len(self.net.nodes)
        xs[self.net.data] = ctx
        self.net.sweep(xs, self.net.terms, self.net.sweep_order[:-1])
        readout = self.net.terms[self.net.label_term]
        return readout.map.predict(xs[readout.source])[0], xs[self.recurrent]

    def context(self, stage: str, chars: Tensor) -> Tensor:
        """Push the newest input characters into the stage's window; [z(t-1), one-hot window]."""
        z, win = self._state[stage]
        ctx, win = self.push(z, win, chars)
        self._state[stage] = (z, win)
        return ctx

    def set_recurrent(self, stage: str, z: Tensor) -> None:
        self._state[stage] = (z, self._state[stage][1])

    def ensure_state(self, stage: str, batch: int) -> None:
        if stage not in self._state or self._state[stage][0].shape[0] != batch:
            self.reset_state(stage, batch)

    def on_train_epoch_start(self) -> None:
        self._state.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._state.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._state.pop("test", None)

    @torch.no_grad()
    def step_logits(self, stage: str, chars: Tensor) -> Tensor:
        """The next character's logits from the past only (the prediction sweep); moves the state."""
        logits, z = self.predict_next(self.context(stage, chars))
        self.set_recurrent(stage, z)
        return logits

    def _eval(self, stage: str, batch) -> None:
        x, y = batch
        self.ensure_state(stage, x.shape[0])
        nll = 0.0
        for t in range(x.shape[1]):  # summed on the device: one host sync per batch, not per character
            nll = nll + F.cross_entropy(self.step_logits(stage, x[:, t]), y[:, t], reduction="sum")
        self._add_nll(stage, nll, y.numel())

    @torch.no_grad()
    def sample(self, prompt: str, chars: int, temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> str:
        """Continue `prompt` by `chars` characters drawn from the model's predictions."""
        ids = self.encode(prompt or self.default_prompt())
        self.reset_state("sample", 1)
        logits = None
        for i in ids:
            logits = self.step_logits("sample", torch.tensor([i], device=self.device))
        out = []
        for _ in range(chars):
            i = self.draw(logits[0], temperature, generator)
            out.append(self.vocab[i])
            logits = self.step_logits("sample", torch.tensor([i], device=self.device))
        return "".join(out)


class TemporalPCNModule(CharModelBase):
    """A character-level temporal predictive coding language model (local rules only).

    Args:
        hidden: size of the recurrent latent z(t).
        window: how many past characters enter the context as one-hots.
        extra_layers: dense tanh layers between z(t) and the output.
        label_precision: precision of the categorical output energy. Learning from
            errors on arrival (`learning.weight_errors: on_arrival`, one sequential sweep
            at step 1), every update is one-step backprop's gradient times it, exactly,
            at any value. Learning from settled errors, small is a weak clamp: the
            output error p - y is O(1), so at precision 1 the settled latent moves far
            from its prediction and the readout's update (taken there) turns away from
            backprop's gradient; weakly clamped, every update points along it
            (tests/unit/test_language.py). Normalized steps divide by a bound that grows
            as precision x ||W_out||^2, so as training grows the readout's weights the
            clamp must be weaker than the initial weights need. Adam rescales the
            updates (mind its floor and memory: `learning.adam_eps`, `learning.adam_betas`).
        carry: "predicted" or "settled": the state carried to the next character.
        recurrent: feed z(t-1) into the context; False: the windowed model (the last
            `window` characters alone, the clamped input of a discriminative PCN).
        inference: settling of z(t) (the latents start at their prediction).
        learning: optimizer and rates (one optimizer step per batch of characters).
        input_shape, output_dim: linked from the data (one-hot characters, vocabulary size).
    """

    def __init__(self, hidden: int = 256, window: int = 8, extra_layers: int = 0, label_precision: float = 1.0,
                 carry: str = "predicted", recurrent: bool = True,
                 inference: Inference = Inference(T_infer=8, eta_infer=0.1, latent_init="feedforward"),
                 learning: Learning = Learning(eta_learn=0.002, optimizer="adam"), seed: int = 0,
                 input_shape: Optional[list[int]] = None, output_dim: int = 65) -> None:
        learning, inference = as_settings(learning, Learning), as_settings(inference, Inference)
        super().__init__(hidden, window, extra_layers, label_precision, learning, output_dim, recurrent)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if carry not in ("predicted", "settled"):
            raise ConfigError(f"unknown carry {carry!r}; choose 'predicted' or 'settled'")
        if inference.latent_init != "feedforward":
            raise ConfigError("the temporal model's latents start at their prediction: latent_init 'feedforward'")
        if learning.beta is not None:
            raise ConfigError(f"{type(self).__name__} does not nudge its label (learning.beta); use label_precision")
        self.timing = timing_for(learning)
        self.timing.check(inference, learning)
        self.inference, self.carry = inference, carry
        self.hebbian = Hebbian(self.net, range(len(self.net.terms)))

    @torch.no_grad()
    def local_gradients(self, x: Tensor, y: Tensor) -> tuple[Gradients, Tensor, Tensor]:
        """Settle every character of the batch in turn (moving the training state) and sum
        each character's local gradients: ((parameter, summed gradient), ...), the summed
        negative log-likelihood of the characters' predictions, and each term's summed energy."""
        B, Lseq = x.shape
        self.ensure_state("train", B)
        totals = [torch.zeros_like(p) for p in self.hebbian.parameters()]
        energies = torch.zeros(len(self.net.terms), device=self.device)
        nll = 0.0
        readout_term = len(self.net.terms) - 1
        for t in range(Lseq):
            ctx = self.context("train", x[:, t])
            label = F.one_hot(y[:, t], self.vocab_size).to(ctx.dtype)
            start = self.net.initial_state(ctx, label, "feedforward")
            xs = start.xs
            predicted = xs[self.recurrent].clone()
            readout = self.net.terms[readout_term]
            start.predictions[readout_term] = readout.map.predict(xs[readout.source])  # reused by settle
            nll += F.cross_entropy(start.predictions[readout_term][0], y[:, t], reduction="sum")
            settled, result = settle_for_learning(self.net, start, self.inference, self.timing)
            energies += self.net.energies(result.errors)
            for acc, (_, g) in zip(totals, local_gradients([self.hebbian], settled)):
                acc += g
            self.set_recurrent("train", predicted if self.carry == "predicted" else xs[self.recurrent].clone())
        return list(zip(self.hebbian.parameters(), totals)), nll, energies

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        n = x.numel()
        pairs, nll, energies = self.local_gradients(x, y)
        with torch.no_grad():
            apply_gradients(self.optimizers(), pairs, n)
        bits = nll / n / math.log(2)
        self.log("train/bits_per_char", bits, prog_bar=True, on_step=True, on_epoch=True)
        for t, e in zip(self.net.terms, energies / n):
            self.log(f"train/energy_{t.name}", e, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.step_lr_schedule()
