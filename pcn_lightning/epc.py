"""Error-based PC (ePC; Goemaere et al. 2025): inference with the errors as the state.

State PC settles the latents x. ePC writes every free latent as its prediction plus
its own error, x(j) = f(map(x(source))) + e(j), and settles the errors e instead:

    E(e)       = sum_j pi(j)/2 ||e(j)||^2  +  the clamped terms' energies (the label's)
    dE/de(j)   = pi(j) e(j) + G(j),     G(j) = dE_rest/dx(j) through every term j predicts:
                 - map^T h            for a term predicting a clamped node (its h, as in state PC)
                 + map^T (f'(a) G(t)) for a term predicting a free latent t (x(t) moves with x(j))
    e(j)      <- e(j) - eta dE/de(j)        (every free latent at once; momentum optional;
                                             eta over a curvature bound with step_size normalized)

G is one pass back from the label through the transposes (`Map.transpose_add_`), as a
sequential sweep's; the forward pass then rebuilds x from e. The minimum is state PC's
(there pi e(t) = -G(t) is the same balance of errors), reached in far fewer steps, and
the errors are held as numbers of their own rather than as x - f(a), a difference of two
nearly equal latents that loses a small error's digits in float32.

The weights learn from the errors where inference ends (dE/dtheta there: the same
Hebbian rule), so `settle_errors` returns `inference.SettleResult` like `settle`.
Supported: every free latent predicted by exactly one term (chains, the conv VGGs);
not networks where two terms predict one latent (skip connections into it).
"""

from __future__ import annotations

from typing import Sequence

import torch

from pcn_lightning.errors import ConfigError
from pcn_lightning.inference import SettleResult, settle
from pcn_lightning.network import PCNetwork
from pcn_lightning.settings import Inference
from pcn_lightning.terms import TermErrors

Tensor = torch.Tensor


def check_supported(net: PCNetwork) -> None:
    """ePC's reparametrization needs one prediction per free latent, reached from the data."""
    many = [net.nodes[j].name for j in net.latent_order if len(net.targets_of[j]) != 1]
    if many:
        raise ConfigError(f"inference.state 'errors' (ePC) writes each latent as its one prediction plus its error; "
                          f"{many} are predicted by several terms here: use state 'latents' for this network")
    net.check_init("feedforward")


class ErrorState:
    """The errors e of the free latents, and the forward pass that rebuilds x from them."""

    def __init__(self, net: PCNetwork, xs: list, free: Sequence[bool]) -> None:
        self.net, self.xs, self.free = net, xs, free
        self.order = [k for k in net.sweep_order if free[net.terms[k].target]]  # terms predicting free latents
        self.e = {net.terms[k].target: torch.zeros_like(xs[net.terms[k].target]) for k in self.order}
        self.pred: dict = {}  # term -> (a, ctx), of the last forward pass

    def forward(self) -> None:
        """x(j) = f(map(x(source))) + e(j) for every free latent, from the data outwards."""
        for k in self.order:
            t = self.net.terms[k]
            a, ctx = t.map.predict(self.xs[t.source])
            self.pred[k] = (a, ctx)
            self.xs[t.target] = t.act.f(a) + self.e[t.target]

    def errors(self, active: Sequence[bool]) -> list:
        """Every active term's errors on the current state: a free latent's error is its e
        itself (not recomputed as x - f(a)), h = pi f'(a) e."""
        out = []
        for k, t in enumerate(self.net.terms):
            if not active[k]:
                out.append(None)
            elif k in self.pred:
                a, ctx = self.pred[k]
                eps = self.e[t.target]
                h = eps if t.act.is_identity else t.act.df(a) * eps
                out.append(TermErrors(a, ctx, eps, h if t.unit_precision else h * t.pi))
            else:  # a term into a clamped node (the label): as state PC reads it
                out.append(t.errors(self.xs[t.target], self.xs[t.source]))
        return out

    def step_sizes(self, settings: Inference) -> dict:
        """Each error's step: eta_infer ("fixed"), or eta_infer over a bound on its curvature
        ("normalized"): pi of its own term plus, through every map down to the clamped
        label, the squared product of the maps' Lipschitz bounds and activation slopes
        times the label term's curvature (moving e(j) moves every latent after it)."""
        eta = settings.eta_infer
        targets = [self.net.terms[k].target for k in self.order]
        if settings.step_size == "fixed":
            return {j: eta for j in targets}
        net, K = self.net, {}
        for j in reversed(targets):
            c = 0.0
            for k in net.sources_of[j]:
                t = net.terms[k]
                if t.target in K:
                    c += (t.act.max_slope * t.map.lipschitz_bound()) ** 2 * K[t.target]
                else:
                    c += t.curvature_on_source()
            K[j] = c
        return {j: eta / (net.terms[net.targets_of[j][0]].pi_max() + K[j]) for j in targets}

    def gradients(self, errors: list) -> dict:
        """dE/de(j) for every free latent: pi e(j) + G(j), G by one pass back from the label."""
        net = self.net
        G = {}
        for j in reversed([net.terms[k].target for k in self.order]):  # every node after those it predicts
            g = torch.zeros_like(self.xs[j])
            for k in net.sources_of[j]:
                t, err = net.terms[k], errors[k]
                if err is None:
                    continue
                if t.target in G:  # a free latent: x(target) moves with x(j)
                    a, ctx = self.pred[k]
                    back = G[t.target] if t.act.is_identity else t.act.df(a) * G[t.target]
                    t.map.transpose_add_(g, back, ctx, 1.0)
                else:  # a clamped target: its error's pull, as in state PC
                    t.map.transpose_add_(g, err.h, err.ctx, -1.0)
            G[j] = g
        out = {}
        for k in self.order:
            t = net.terms[k]
            pi_e = self.e[t.target] if t.unit_precision else self.e[t.target] * t.pi
            out[t.target] = pi_e + G[t.target]
        return out


def settle_errors(net: PCNetwork, xs: list, free: Sequence[bool], settings: Inference, record: bool = False):
    """`settings.T_infer` ePC steps from the feedforward state (e = 0), in place in `xs`."""
    active = [True] * len(net.terms)
    state = ErrorState(net, xs, free)
    state.forward()
    errors = state.errors(active)
    start = net.energies(errors)
    trace = [start] if record else None
    etas, mu = state.step_sizes(settings), settings.momentum
    velocity = {j: torch.zeros_like(e) for j, e in state.e.items()} if mu else None
    for _ in range(settings.T_infer):
        for j, g in state.gradients(errors).items():
            if velocity is not None:
                g = velocity[j].mul_(mu).add_(g)
            state.e[j].sub_(g, alpha=etas[j])
        state.forward()
        errors = state.errors(active)
        if record:
            trace.append(net.energies(errors))
    return SettleResult(errors, torch.stack(trace) if record else None, settings.T_infer, active, start)


def settle_by_state(net: PCNetwork, xs: list, free: Sequence[bool], settings: Inference, record: bool = False,
                    predictions=None, before_node=None, repredict: bool = True) -> SettleResult:
    """`settle_errors` where the settings ask for the errors as the state and the label is
    clamped; `inference.settle` otherwise (a free label: the discriminative network's
    label-free state is its feedforward sweep either way)."""
    if getattr(settings, "state", "latents") == "errors" and not free[net.label]:
        return settle_errors(net, xs, free, settings, record)
    return settle(net, xs, free, settings, record, predictions, before_node, repredict)
