"""Learning rules: each a small object that names the parameters it trains and
computes their gradients from the settled state, by a local rule.

`PCNModule.training_step` settles, then asks every rule for its gradients:

- `Hebbian`: every term's map learns from the settled errors, dE/dtheta
  (for a dense map -h x^T, the seed's outer product), or from each term's error
  when the sweep reached its source (`weight_errors: on_arrival`, `OnArrival`).
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
    arrival_grads: Optional[dict] = None  # term -> dE/dtheta at its error on arrival (`OnArrival`)
    scale: float = 1.0  # what the Hebbian updates are multiplied by (1/b for a nudge b: `timing.Nudged`)
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
    """dE/dtheta of the given terms at the settled errors (or, where the batch recorded
    them, at each term's error on arrival: `OnArrival`)."""

    def __init__(self, net: PCNetwork, terms: Sequence[int]) -> None:
        self.net, self.terms = net, list(terms)

    def parameters(self) -> list[nn.Parameter]:
        return [p for k in self.terms for p in self.net.terms[k].map.parameters()]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        grads = []
        for k in self.terms:
            t, e = self.net.terms[k], batch.errors[k]
            if batch.arrival_grads is not None and k in batch.arrival_grads:
                grads += batch.arrival_grads[k]
            elif e is None:  # a term that settling dropped: its error is zero
                grads += [torch.zeros_like(p) for p in t.map.parameters()]
            else:
                grads += t.weight_grads(e)
        if batch.scale != 1.0:
            grads = [g.mul_(batch.scale) for g in grads]
        return grads


class LabelFreeReadout(Rule):
    """The label's term, learning on the label-free settled state: its error there is
    label - f(map(x_source)) with x_source from a settle that never saw the label."""

    def __init__(self, net: PCNetwork) -> None:
        self.net = net
        self.term = net.label_term

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
    """Each term's learned log-precision (one, or one per unit), by its local rule on
    the free energy with a Gamma prior on every precision p:

        F = E - sum n/2 log p  +  nu n/2 (p / p0 - log p)
        dF/dlog p = p S/2 - n/2 + nu n/2 (p / p0 - 1)

    S: the squared errors it weighs, summed over the batch (and the term's values,
    for one per term); n: how many (B, or B x values). p0: the term's configured
    precision (the prior's centre); nu: the prior's strength in pseudo-observations
    per observation. The fixed point p* = (1 + nu) / (S/n + nu/p0) is the inverse
    mean squared error shrunk toward p0, and bounded above by p0 (1 + nu) / nu however
    small the error gets: without the prior (nu = 0) the precision of a term the free
    latents can explain away runs off to infinity (F is unbounded below there)."""

    learns_precision = True

    def __init__(self, net: PCNetwork, prior_strength: float = 0.0) -> None:
        self.net, self.nu = net, float(prior_strength)

    def parameters(self) -> list[nn.Parameter]:
        return [t.log_precision for t in self.net.terms]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        grads = []
        for t, e in zip(self.net.terms, batch.errors):
            if e is None:
                grads.append(torch.zeros_like(t.log_precision))
                continue
            grads.append(precision_gradient(t.log_precision.detach(), e.eps, self.nu, t.prior_mean))
        return grads


def precision_gradient(log_p: Tensor, eps: Tensor, nu: float, p0: float) -> Tensor:
    """dF/dlog p for errors eps (B, *shape) and a log-precision of shape () or eps.shape[1:]."""
    p = log_p.exp()
    if log_p.dim() == 0:
        S, n = eps.square().sum(), float(eps.numel())
    else:
        S, n = eps.square().sum(0), float(eps.shape[0])
    return p * S / 2 - n / 2 + nu * n / 2 * (p / p0 - 1)


class PredictivePrecision(Rule):
    """The precision pi of the label's label-free prediction, for class probabilities
    p(c | x) = softmax(pi * prediction): learned by its own local rule, the gradient in
    log pi of the categorical negative log-likelihood of the true class,

        dNLL/dlog pi = -pi (prediction_y - sum_c p_c prediction_c),

    on the label-free state (the one evaluation reads), so that confidence matches the
    predictions' accuracy on the training data. It enters neither inference nor the
    other rules."""

    learns_precision = True

    def __init__(self, net: PCNetwork, log_precision: nn.Parameter) -> None:
        self.net, self.log_precision = net, log_precision

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_precision]

    def gradients(self, batch: SettledBatch) -> list[Tensor]:
        return [predictive_precision_gradient(self.log_precision.detach(), batch.label_free()[self.net.label], batch.label)]


def predictive_precision_gradient(log_pi: Tensor, prediction: Tensor, label: Tensor) -> Tensor:
    """d/dlog pi of -sum_b log softmax(pi * prediction_b)[y_b] (summed over the batch)."""
    pi = log_pi.exp()
    p = torch.softmax(pi * prediction, 1)
    return -pi * ((label - p) * prediction).sum()


def precision_free_energy(net: PCNetwork, errors: Sequence[TermErrors], log_precisions: Sequence[Tensor],
                          nu: float = 0.0, prior_means: Optional[Sequence[float]] = None) -> Tensor:
    """F = sum_k [p/2 S - n/2 log p + nu n/2 (p/p0 - log p)] for given log-precisions
    (one per term, each of shape () or the term's value shape), written out for autograd."""
    F = 0.0
    for k, (lp, e) in enumerate(zip(log_precisions, errors)):
        p = lp.exp()
        per_value = e.eps.square().sum(0) if lp.dim() else e.eps.square().sum()
        n = float(e.eps.shape[0]) if lp.dim() else float(e.eps.numel())
        p0 = 1.0 if prior_means is None else prior_means[k]
        F = F + (0.5 * p * per_value - 0.5 * n * lp + nu * n / 2 * (p / p0 - lp)).sum()
    return F


class OnArrival:
    """Z-IL's timing (Song et al. 2020, "Can the brain do backpropagation?"): each term
    learns from its error at the moment the sweep reaches its source node, before that
    node moves. `before_node` (for `inference.settle`) records each such term's
    dE/dtheta then (`grads`, read by `Hebbian`: the map's source is about to move in
    place, so its gradient cannot wait). Terms whose source never moves (the data's)
    are not recorded: their settled error is the one on arrival.

    Why: from the feedforward state, one sequential sweep at eta 1 moves each latent by
    J^T h of the node above, so its error on arrival is exactly backprop's delta (times
    the label's precision); by the end of the sweep the node below has moved too and
    the settled error is (I - f' J J^T f') times it, which turns away from backprop's
    and flips sign once ||J||^2 > 2 (tests/unit/test_equations.py)."""

    def __init__(self, net: PCNetwork) -> None:
        self.net = net
        self.grads: dict = {}

    def before_node(self, j: int, errors: list) -> dict:
        """Records the terms' dE/dtheta, and returns their map^T h (term -> tensor),
        which node j's step needs next: both from one pass back through each map
        (`Map.transpose_and_weight_grads`)."""
        transposed = {}
        for k in self.net.sources_of[j]:
            if errors[k] is not None and k not in self.grads:
                e = errors[k]
                transposed[k], self.grads[k] = self.net.terms[k].map.transpose_and_weight_grads(e.h, e.ctx)
        return transposed


def rules_for(net: PCNetwork, learning, predictive_log_precision: Optional[nn.Parameter] = None) -> list[Rule]:
    """The rules a `Learning` setting asks for: Hebbian for every term (but the label's,
    with `readout_learning: label_free`), the amortizer's, the precisions'."""
    label_free = learning.readout_learning == "label_free"
    out: list[Rule] = [Hebbian(net, [k for k in range(len(net.terms)) if not (label_free and k == net.label_term)])]
    if label_free:
        out.append(LabelFreeReadout(net))
    if len(net.amortizer):
        out.append(Amortizer(net))
    if learning.learn_precision:
        out.append(Precision(net, learning.precision_prior))
    if learning.predictive_precision:
        out.append(PredictivePrecision(net, predictive_log_precision))
    return out
