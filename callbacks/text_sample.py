"""TextSample: what the language model writes, in TensorBoard's text tab."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks._common import tensorboard


class TextSample(L.Callback):
    """At every validation end (global rank zero), continue `prompt` by `chars`
    characters (temperature `temperature`, seeded) and log it as the text
    `samples/text`. Models with a `sample(prompt, chars, temperature, generator)` method."""

    def __init__(self, prompt: str = "ROMEO:", chars: int = 300, temperature: float = 0.8, seed: int = 0) -> None:
        self.prompt, self.chars, self.temperature, self.seed = prompt, chars, temperature, seed

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        writer = tensorboard(trainer)
        if trainer.sanity_checking or writer is None or not hasattr(pl_module, "sample") or not pl_module.vocab:
            return
        prompt = "".join(c for c in self.prompt if c in pl_module.vocab) or pl_module.vocab[0]  # a corpus without it
        text = prompt + pl_module.sample(prompt, self.chars, self.temperature, torch.Generator().manual_seed(self.seed))
        writer.add_text("samples/text", "    " + text.replace("\n", "\n    "), global_step=trainer.global_step)
