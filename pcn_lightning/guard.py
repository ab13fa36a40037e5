"""The divergence guard: stop training, before any weight moves, when inference
or learning has blown up, with a message that says what to lower."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from pcn_lightning.errors import DivergenceError


class DivergenceGuard:
    """Raises `DivergenceError` when, on a training batch,

    - any term's energy is NaN or inf;
    - the settle ended more than `factor` times above where it started (inference,
      gradient descent on the energy, must not raise it: the step is too large; not
      checked when `start` is None: errors on arrival learn from one sweep by design);
    - the energy per sample exceeds `factor` times the first batch's (learning
      blew up). The reference is kept in checkpoints.
    """

    def __init__(self, factor: float = 100.0) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1 or not math.isfinite(factor):
            from pcn_lightning.errors import ConfigError

            raise ConfigError(f"divergence_factor must be a number > 1; got {factor!r}")
        self.factor = float(factor)
        self.reference: Optional[float] = None

    def state_dict(self) -> dict:
        return {"reference": self.reference}

    def load_state_dict(self, state: dict) -> None:
        self.reference = state.get("reference", state.get("pcn_reference_energy"))

    def check(self, per_term: torch.Tensor, start_per_term: Optional[torch.Tensor], names: Sequence[str],
              step: int) -> None:
        values = per_term.tolist()
        start = None if start_per_term is None else start_per_term.sum().item()
        total = sum(values)
        for name, v in zip(names, values):
            if not math.isfinite(v):
                raise DivergenceError(
                    f"the energy of {name} became {v} at training step {step}; the weights were not "
                    "updated. Lower eta_infer (inference diverged) or eta_learn, or use a linear "
                    "activation for layer 0 when inputs are normalized."
                )
        worst = names[max(range(len(values)), key=values.__getitem__)]
        if start is not None and total > self.factor * max(start, 1e-12):
            raise DivergenceError(
                f"inference diverged at training step {step}: the settle raised the energy per sample "
                f"from {start:.4g} to {total:.4g} (largest in {worst}; settling must lower it); the "
                "weights were not updated. Lower eta_infer."
            )
        if self.reference is None:
            self.reference = max(total, 1e-12)
        elif total > self.factor * self.reference:
            raise DivergenceError(
                f"the energy per sample grew to {total:.4g}, over {self.factor:g}x the first batch's "
                f"{self.reference:.4g}, at training step {step} (largest in {worst}); the weights were "
                "not updated. Lower eta_learn (or the per-layer rate of that layer) or eta_infer."
            )
