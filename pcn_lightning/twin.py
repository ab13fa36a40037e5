"""`BackpropTwin`: the PCN's architecture trained by autograd, as a baseline.

Same dims, activations, readout, initialization, optimizer, learning rates and
data as the `PCNModule` it shares its configuration with: swap the class in a
config (`model.class_path: pcn_lightning.BackpropTwin`) to get the baseline for
any PCN number. The network is the feedforward classifier input -> label of the
same shape: hidden l+1 = f(l)(W(l) hidden l), scores = R hidden L, trained on
1/2 ||y - scores||^2 (the PCN's supervised term; `loss: ce` for cross-entropy).
For the generative direction its weights are the transposes of the generative
ones (same shapes, same parameter count).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pcn_lightning.errors import ConfigError
from pcn_lightning.module import PCNModule

Tensor = torch.Tensor


class BackpropTwin(PCNModule):
    """Feedforward twin of a PCN, trained with backprop (automatic optimization).

    Takes every argument of `PCNModule` (inference settings are ignored) plus:

    Args:
        loss: "mse" (1/2 ||one_hot(y) - scores||^2 per sample, the PCN's
            supervised term) or "ce" (cross-entropy).
    """

    def __init__(self, *args: Any, loss: str = "mse", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if loss not in ("mse", "ce"):
            raise ConfigError(f"unknown twin loss {loss!r}; choose 'mse' or 'ce'")
        self.loss_name = loss
        self.automatic_optimization = True

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for W, f in zip(self.net.weights, self.net.acts):
            h = f.f(h @ W if self.net.generative else h @ W.T)
        return h @ self.net.readout.T

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = self._flatten_batch(batch)
        scores = self(x)
        if self.loss_name == "ce":
            loss = F.cross_entropy(scores, y)
        else:
            target = F.one_hot(y, self.net.output_dim).to(scores.dtype)
            loss = 0.5 * (target - scores).pow(2).sum(1).mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        pass  # Lightning steps schedulers itself under automatic optimization

    def predict_logits(self, x: Tensor, generator=None) -> Tensor:
        with torch.no_grad():
            return self(x)

    def eval_outputs(self, x: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        return self.predict_logits(x), torch.zeros((), device=x.device)
