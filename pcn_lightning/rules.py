"""Learning rules: each a small object that names the parameters it trains and
computes their gradients from the settled state, by a local rule.

`PCNModule.training_step` settles, then asks every rule for its gradients:

- `Hebbian`: every term's map learns from the settled errors, dE/dtheta
  (for a dense map -h x^T, the seed's outer product).
- `LabelFreeReadout`: the label's term learns instead from a second settle of
  the batch without the label, the state evaluation reads (its delta rule).
- `Amortizer`: the bottom-up guess learns to predict the settled latents
  (each amortizer term's own Hebbian rule on the settled state).
- `Precision`: each term's log-precision descends the free energy
  F = E - sum n/2 log pi:  dF/dlog pi = pi/2 ||eps||^2 - n/2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from pcn_lightning.network import PCNetwork
from pcn_lightning.terms import TermErrors

Tensor = torch.Tensor


@dataclass
class SettledBatch:
    """What a rule may read: the network, the settled state and its errors."""

    net: PCNetwork
    xs: list[Tensor]
    errors: list[Optional[TermErrors]]
    label: Tensor  # the clamped label values (B, C)
    label_free_state: Callable[[], list[Tensor]]  # settles once, on first use
    _cache: dict = field(default_factory=dict)

    def label_free(self) -> list[Tensor]:
        if "xs" not in self._cache:
            self._cache["xs"] = self.label_free_state()
        return self._cache["xs"]


class Rule:
    """A set of parameters and the local rule that gives their gradients."""

    def parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        raise NotImplementedError


class Hebbian(Rule):
    """dE/dtheta of the given terms at the settled errors."""

    def __init__(self, net: PCNetwork, terms: Sequence[int]) -> None:
        self.net, self.terms = net, list(terms)

    def parameters(self) -> list[nn.Parameter]:
        return [p for k in self.terms for p in self.net.terms[k].map.parameters()]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        grads = []
        for k in self.terms:
            t, e = self.net.terms[k], batch.errors[k]
            if e is None:  # a term that settling dropped: its error is zero
                grads += [torch.zeros_like(p) for p in t.map.parameters()]
            else:
                grads += t.weight_grads(e)
        return grads


class LabelFreeReadout(Rule):
    """The label's term, learning on the label-free settled state: its error there is
    label - f(map(x_source)) with x_source from a settle that never saw the label."""

    def __init__(self, net: PCNetwork) -> None:
        self.net = net
        self.term = next(k for k, t in enumerate(net.terms) if t.target == net.label)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.net.terms[self.term].map.parameters())

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        t = self.net.terms[self.term]
        free_xs = batch.label_free()
        return t.weight_grads(t.errors(batch.label, free_xs[t.source]))


class Amortizer(Rule):
    """Each amortizer term predicts a settled latent from the settled node below it."""

    def __init__(self, net: PCNetwork) -> None:
        self.net = net

    def parameters(self) -> list[nn.Parameter]:
        return [p for t in self.net.amortizer for p in t.map.parameters()]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        return [g for t in self.net.amortizer for g in t.weight_grads(t.errors(batch.xs[t.target], batch.xs[t.source]))]


class Precision(Rule):
    """Learned log-precision of every term, by dF/dlog pi = pi/2 ||eps||^2 - n/2.

    Its fixed point is the inverse mean squared error of the term. F is unbounded
    below in the precision of a term whose error the free latents can drive to
    zero, so such precisions run away (see the tests)."""

    def __init__(self, net: PCNetwork) -> None:
        self.net = net

    def parameters(self) -> list[nn.Parameter]:
        return [t.log_precision for t in self.net.terms]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        grads = []
        for t, e in zip(self.net.terms, batch.errors):
            if e is None:
                grads.append(torch.zeros_like(t.log_precision))
            else:
                grads.append(t.energy(e) - 0.5 * e.eps.numel())
        return grads


def precision_free_energy(net: PCNetwork, errors: Sequence[TermErrors], log_precisions: Tensor) -> Tensor:
    """F = sum_k [pi(k)/2 ||eps(k)||^2 - n(k)/2 log pi(k)] for given log-precisions (for autograd)."""
    return sum(0.5 * lp.exp() * e.eps.pow(2).sum() - 0.5 * e.eps.numel() * lp for lp, e in zip(log_precisions, errors))
