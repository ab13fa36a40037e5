"""The backprop twins: the same networks trained by autograd, as baselines.

`BackpropTwin` (image classifiers), `TemporalTwin` (the character language model,
backpropagation through time; its forward code is the PC model's, `CharModelBase`) and
`TransformerTwin` (the PC transformer's network, `SequenceModelBase`).

A sibling LightningModule: it builds the PCN's network from the same `NetworkSpec`
(same shapes, same initialization for the same seed) and trains its feedforward
classifier (input -> label scores, `builders.twin_forward`) with autograd, with
the same optimizer, learning rates, schedule and data. Swap the class in a config
(`model.class_path: pcn_lightning.BackpropTwin`) to get the baseline of any PCN
number; inference settings of the config are dropped.
"""

from __future__ import annotations

from typing import Optional

import math

import torch
import torch.nn.functional as F

from pcn_lightning.builders import NetworkSpec, build_network, twin_forward
from pcn_lightning.errors import ConfigError
from pcn_lightning.language import CharModelBase
from pcn_lightning.metrics import classification_metrics, log_metrics
from pcn_lightning.flat import from_flat
from pcn_lightning.settings import Learning, as_settings
from pcn_lightning.step import ModelBase
from pcn_lightning.transformer import SequenceModelBase

Tensor = torch.Tensor


class BackpropTwin(ModelBase):
    """Feedforward twin of a PCN, trained with backprop (automatic optimization).

    Args:
        network, learning, input_shape, output_dim: as for `PCNModule`.
        loss: "mse" (1/2 ||one_hot(y) - scores||^2 per sample, the PCN's Gaussian
            label term) or "ce" (cross-entropy of the label term's logits, the PCN's
            categorical label term); by default the one of the network's label energy.
    """

    def __init__(self, network: NetworkSpec, learning: Learning = Learning(),
                 loss: Optional[str] = None, input_shape: Optional[list[int]] = None, output_dim: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        network, learning = as_settings(network, NetworkSpec), as_settings(learning, Learning)
        categorical = network.label_energy == "categorical"
        loss = loss or ("ce" if categorical else "mse")
        if loss not in ("mse", "ce"):
            raise ConfigError(f"unknown twin loss {loss!r}; choose 'mse' or 'ce'")
        if categorical and loss != "ce":
            raise ConfigError("a categorical label energy's twin learns by cross-entropy: loss 'ce' (or leave it unset)")
        shape = input_shape or [network.dims[0] if network.dims else 784]
        self.net = build_network(network, shape, output_dim)
        self.learning, self.loss_name = learning, loss
        self.rates = learning.rates(len(self.net.terms))
        # class probabilities softmax(pi * scores) for the squared-error twin, pi fitted
        # as the PCN's (the true class's likelihood on the training batches, one Newton
        # step a batch on detached scores); plain softmax(scores) for cross-entropy
        self.register_buffer("predictive_log_precision", torch.zeros(()))
        self.metrics = classification_metrics(self.net.num_classes, energy=False)

    @classmethod
    def from_flat(cls, **kwargs) -> "BackpropTwin":
        """Build from flat settings: BackpropTwin.from_flat(dims=[784, 256], eta_learn=1e-3)."""
        return from_flat(cls, kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return twin_forward(self.net, x, logits=self.loss_name == "ce")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        scores = self(x)
        if self.loss_name == "ce":
            loss = F.cross_entropy(scores, y)
        else:
            onehot = F.one_hot(y, self.net.num_classes).to(scores.dtype)
            loss = 0.5 * (onehot - scores).pow(2).sum(1).mean()
            self._fit_predictive_precision(scores.detach(), onehot)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    @torch.no_grad()
    def _fit_predictive_precision(self, scores: Tensor, onehot: Tensor) -> None:
        """The PCN's rule (`rules.predictive_precision_gradient`) at the PCN's rate
        (`learning.eta_precision`), stepped here by plain gradient descent: the precision
        is not in the twin's loss, so its optimizer does not see it."""
        from pcn_lightning.rules import predictive_precision_gradient

        g = predictive_precision_gradient(self.predictive_log_precision, scores, onehot) / scores.shape[0]
        self.predictive_log_precision.sub_(self.learning.eta_precision * g.clamp(-10, 10))

    def on_train_epoch_end(self) -> None:
        if self.loss_name != "ce":
            self.log("precision/predictive", self.predictive_log_precision.exp(), on_epoch=True)

    def class_probabilities(self, logits: Tensor) -> Tensor:
        """softmax(scores) (cross-entropy) or softmax(pi * scores) (squared error, pi fitted)."""
        if self.loss_name == "ce":
            return torch.softmax(logits, 1)
        return torch.softmax(self.predictive_log_precision.exp() * logits, 1)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Class scores (B, C); inputs as `PCNModule.predict_logits` takes them."""
        with torch.no_grad():
            return self(self.net.checked_input(x))

    def _eval_step(self, stage: str, batch) -> Tensor:
        x, y = batch
        logits = self.predict_logits(x)
        log_metrics(self, stage, logits, y)
        return logits

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> Tensor:
        return self._eval_step("test", batch)

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self.predict_logits(batch[0] if isinstance(batch, (tuple, list)) else batch)


class TemporalTwin(CharModelBase):
    """The same network and parameters as `TemporalPCNModule`, trained by
    backpropagation through time over each batch (the state carried across
    batches, detached), cross-entropy loss, the same optimizer and updates.
    `through_time: false` detaches z(t-1) at every character: backprop with the
    one-step credit temporal PC has (the ablation that says what BPTT is worth)."""

    def __init__(self, hidden: int = 256, window: int = 8, extra_layers: int = 0, label_precision: float = 1.0,
                 recurrent: bool = True, learning: Learning = Learning(eta_learn=0.002, optimizer="adam"), seed: int = 0,
                 through_time: bool = True, input_shape: Optional[list[int]] = None, output_dim: int = 65) -> None:
        learning = as_settings(learning, Learning)
        super().__init__(hidden, window, extra_layers, label_precision, learning, output_dim, recurrent)
        self.save_hyperparameters()
        self.through_time = bool(through_time)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        B, Lseq = x.shape
        self.ensure_state("train", B)
        z, win = self._state["train"]
        z = z.detach()
        loss = 0.0
        for t in range(Lseq):  # the PC model's own forward code, with autograd on
            ctx, win = self.push(z, win, x[:, t])
            logits, z = self.predict_next(ctx)
            z = z if self.through_time else z.detach()
            loss = loss + F.cross_entropy(logits, y[:, t], reduction="sum")
        self._state["train"] = (z.detach(), win)
        loss = loss / (B * Lseq)
        self.log("train/bits_per_char", loss.detach() / math.log(2), prog_bar=True, on_step=True, on_epoch=True)
        return loss


class TransformerTwin(SequenceModelBase):
    """The PC transformer's network (same layers, initialization for the same seed,
    optimizer, schedule and batches) trained by autograd on the cross-entropy of its
    prediction sweep (`SequenceModelBase.logits`); `label_precision` is kept for the
    config's sake and does not enter (cross-entropy is the label energy at precision 1)."""

    def __init__(self, layers: Optional[list] = None, context: int = 64, label_precision: float = 1.0,
                 learning: Learning = Learning(eta_learn=0.001, optimizer="adamw"), seed: int = 0,
                 input_shape: Optional[list[int]] = None, output_dim: int = 65) -> None:
        learning = as_settings(learning, Learning)
        super().__init__(layers, context, label_precision, learning, output_dim)
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        self.check_length(x)
        with self.dropout_masks():  # the PC model's masks for this batch
            loss = F.cross_entropy(self.logits(x).flatten(0, 1), y.flatten())
        self.log("train/bits_per_char", loss.detach() / math.log(2), prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """`learning.grad_clip_norm`, as the PC model clips its hand-set gradients."""
        if self.learning.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.learning.grad_clip_norm)
