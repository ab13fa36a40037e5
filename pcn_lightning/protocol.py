"""What the diagnostics callbacks may use of a module: a small declared interface.

`PCNModule` provides it; `BackpropTwin` does not (it has no latents to settle),
so the callbacks skip it. A module of one's own that provides these gets the
diagnostics too.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch

from pcn_lightning.inference import SettleResult
from pcn_lightning.network import PCNetwork
from pcn_lightning.settings import Inference


@runtime_checkable
class Diagnosable(Protocol):
    net: PCNetwork  # nodes and terms: names, sizes, activations, parameters
    inference: Inference  # training's settings (T_infer, eta_infer for the advice)
    last_term_energies: Optional[torch.Tensor]  # per term, per sample, of the last training step

    def settle_probe(self, x: torch.Tensor, y: torch.Tensor,
                     generator: torch.Generator) -> tuple[list[torch.Tensor], SettleResult]:
        """Settle like a training step (label clamped), recording every step's energies:
        the settled state and the result."""
        ...

    def terms_learned_from_settle(self) -> list[int]:
        """Indices of the terms whose weights learn from the settled errors."""
        ...

    def named_weights(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Every learned weight with a short name (W0, W1, ..., readout)."""
        ...
