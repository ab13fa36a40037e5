"""Inference: settle the free latents by gradient descent on the energy.

The seed's section 4, on any network of terms (see `network.PCNetwork`):

    eps(k) = x(target k) - f(k)(map(k)(x(source k)))           every term's error
    dE/dx(j) = sum_{k -> j} pi(k) eps(k)  -  sum_{j -> k} map(k)^T h(k)
    x(j) <- x(j) - eta_infer * dE/dx(j)                         every free node

`reference_step` is that, line by line, with fresh tensors. `settle` runs the
same arithmetic in place into preallocated buffers (a clamped node's prediction
computed once per settle, no allocation per step for dense maps), or, with
`compile_settle`, each reference step through torch.compile. Tests prove all three
equal.

Two schedules: "parallel" (the seed's: every free node steps at once, from the
same errors) and "sequential" (`reference_sweep`: one node at a time, from the
label outwards, each seeing the new values of the nodes before it: block
coordinate descent). A sequential step carries the label's error through every
layer in one sweep, where a parallel one moves it one layer per step (and with
a small step, diffuses it: errors far from the label stay near zero for long).
From the feedforward state with a small label precision, L sequential steps at
eta 1 bring every layer of an L-layer chain to its equilibrium error, which is
backprop's up to scale (Whittington & Bogacz 2017; tests/unit/test_equations.py):
what deep networks need (see benchmarks/ACCURACY.md, depth).

Step sizes: one eta_infer for every node ("fixed"), or eta_infer divided by a
bound on each node's curvature ("normalized", `step_sizes`), which keeps settling
stable as training grows the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from pcn_lightning.network import PCNetwork
from pcn_lightning.settings import Inference
from pcn_lightning.terms import TermErrors

Tensor = torch.Tensor


@dataclass
class SettleResult:
    """What `settle` returns: the errors at the settled state and the energy trace."""

    errors: list[Optional[TermErrors]]  # of the final latents (None: a dropped term): reuse them for learning
    trace: Optional[Tensor]  # (steps + 1, n_terms) energies per term, if recorded
    steps: int  # inference steps taken (< T_infer when stopped early)
    active: list[bool]  # which terms settling handled
    start: Optional[Tensor] = None  # (n_terms,) energies before the first step


def reference_step(net: PCNetwork, xs: Sequence[Tensor], free: Sequence[bool], eta: float,
                   active: Sequence[bool]) -> tuple[list[Tensor], list[Optional[TermErrors]]]:
    """One inference step written as the math reads: the new latents and their errors."""
    errors = net.errors(xs, active)
    grads = net.latent_gradients(errors, free)
    new = [x if g is None else x - eta * g for x, g in zip(xs, grads)]
    return new, errors


_COMPILED = {}


def _compiled_step(net: PCNetwork, xs: Sequence[Tensor], errors: Sequence[Optional[TermErrors]],
                   free: Sequence[bool], eta: float, active: Sequence[bool]):
    """The reference step on errors already computed: x - eta dE/dx and the new errors,
    as one function for torch.compile (one error sweep per step, as in the eager loop)."""
    grads = net.latent_gradients(errors, free)
    new = [x if g is None else x - eta * g for x, g in zip(xs, grads)]
    return new, net.errors(new, active)


def compiled_step():
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_compiled_step, dynamic=False)
    return _COMPILED["step"]


class ErrorBuffers:
    """Preallocated a, eps, h of every active term; the predictions of terms whose
    source is clamped are made once and kept (the weights do not move in a settle)."""

    def __init__(self, net: PCNetwork, xs: Sequence[Tensor], free: Sequence[bool], active: Sequence[bool],
                 predictions: Optional[dict] = None) -> None:
        self.net = net
        self.errors: list[Optional[TermErrors]] = []
        self.fixed: list[bool] = []
        for k, t in enumerate(net.terms):
            if not active[k]:
                self.errors.append(None)
                self.fixed.append(False)
                continue
            x_src, x_tgt = xs[t.source], xs[t.target]
            if predictions and k in predictions:  # made by the feedforward init: the same numbers
                a, ctx = predictions[k]
                if a.data_ptr() == x_tgt.data_ptr():  # an identity activation made the latent the prediction
                    a = a.clone()  # itself: the buffer must not move with the latent
            else:
                a = x_tgt.new_empty(x_tgt.shape)
                ctx = t.map.predict_into(x_src, a)
            eps = torch.empty_like(x_tgt)
            h = eps if t.shares_h_with_eps() else torch.empty_like(x_tgt)
            self.errors.append(TermErrors(a, ctx, eps, h))
            self.fixed.append(not free[t.source])

    def refresh(self, xs: Sequence[Tensor], terms: Sequence[int], predict: bool = True) -> None:
        """Recompute the errors of the given terms on the current xs (with `predict`
        False, from their current predictions: only their targets moved)."""
        for k in terms:
            t, e = self.net.terms[k], self.errors[k]
            if e is None:
                continue
            if predict and not self.fixed[k]:
                e.ctx = t.map.predict_into(xs[t.source], e.a)
            t.errors_into(e, xs[t.target])

    def update(self, xs: Sequence[Tensor], first: bool = False) -> list[Optional[TermErrors]]:
        """Every term's errors on the current xs (`first`: the predictions were just made)."""
        self.refresh(xs, range(len(self.errors)), predict=not first)
        return self.errors


def step_node_(net: PCNetwork, j: int, x: Tensor, eta: float, errors: Sequence[Optional[TermErrors]],
               transposed: Optional[dict] = None) -> None:
    """x(j) <- x(j) - eta dE/dx(j), in place and fused: x -= eta pi eps for the term
    predicting j, x += eta map^T h for the terms j predicts (`transposed`: term ->
    map^T h already computed on these errors, used rather than computed again)."""
    for k in net.targets_of[j]:
        if errors[k] is not None:
            net.terms[k].sub_scaled_error_(x, errors[k], eta)
    for k in net.sources_of[j]:
        if errors[k] is not None:
            if transposed and k in transposed:
                x.add_(transposed[k], alpha=eta)
            else:
                net.terms[k].map.transpose_add_(x, errors[k].h, errors[k].ctx, eta)


class Momentum:
    """Heavy-ball latents (PCX's latent optimizer): v <- mu v + dE/dx(j), x(j) <- x(j) - eta v,
    each free node's velocity zero at the start of a settle. `step_node_` is a drop-in
    for the plain `step_node_`: the same fused arithmetic writes -dE/dx into a buffer."""

    def __init__(self, mu: float, xs: Sequence[Tensor], free: Sequence[bool]) -> None:
        self.mu = mu
        self.v = {j: torch.zeros_like(x) for j, x in enumerate(xs) if free[j]}
        self.g = {j: torch.empty_like(x) for j, x in enumerate(xs) if free[j]}

    def step_node_(self, net: PCNetwork, j: int, x: Tensor, eta: float, errors: Sequence[Optional[TermErrors]],
                   transposed: Optional[dict] = None) -> None:
        minus_grad = self.g[j].zero_()
        step_node_(net, j, minus_grad, 1.0, errors, transposed)  # -dE/dx(j)
        self.v[j].mul_(self.mu).sub_(minus_grad)
        x.sub_(self.v[j], alpha=eta)


def step_sizes(net: PCNetwork, free: Sequence[bool], active: Sequence[bool], settings: Inference) -> list[float]:
    """Each node's step: eta_infer ("fixed"), or eta_infer over a bound on the node's
    curvature ("normalized"): the sum over its active terms of pi (predicted by them) and
    pi (f'max ||J||)^2 (predicting through them), with ||J|| each map's Lipschitz bound
    (a spectral norm by power iteration for dense and conv maps), read once per settle.
    With it, eta_infer 1 is about the coordinate-descent step, and settling stays
    stable as the weights (and so the curvature) grow in training."""
    eta = settings.eta_infer
    if settings.step_size == "fixed":
        return [eta] * len(free)
    out = []
    for j, node_free in enumerate(free):
        c = sum(net.terms[k].curvature_on_target() for k in net.targets_of[j] if active[k])
        c += sum(net.terms[k].curvature_on_source() for k in net.sources_of[j] if active[k])
        out.append(eta / c if node_free and c > 0 else eta)
    return out


def step_in_place(net: PCNetwork, xs: Sequence[Tensor], free: Sequence[bool], eta,
                  errors: Sequence[Optional[TermErrors]], node_step=step_node_) -> None:
    """The parallel step: every free node from the same errors, in place (`eta` a
    number, or one per node; `node_step`: `step_node_` or `Momentum.step_node_`).
    `errors` belong to the current xs (separate tensors: updating one node does not
    disturb another's error)."""
    etas = eta if isinstance(eta, (list, tuple)) else [eta] * len(xs)
    for j, x in enumerate(xs):
        if free[j]:
            node_step(net, j, x, etas[j], errors)


def reference_sweep(net: PCNetwork, xs: Sequence[Tensor], free: Sequence[bool], eta: float,
                    active: Sequence[bool]) -> list[Tensor]:
    """One sequential step as the math reads: the free nodes one at a time, in the
    order `net.sweep_from_label`, each by -eta dE/dx(j) on the errors of the state
    its predecessors in the sweep left (block coordinate descent, Gauss-Seidel)."""
    xs = list(xs)
    for j in net.sweep_from_label:
        if free[j]:
            g = net.node_gradient(j, net.errors(xs, active))
            if g is not None:
                xs[j] = xs[j] - eta * g
    return xs


def sweep_in_place(net: PCNetwork, xs: Sequence[Tensor], free: Sequence[bool], eta,
                   buffers: "ErrorBuffers", before_node: Optional[Callable[[int, list], Optional[dict]]] = None,
                   repredict: bool = True, node_step=step_node_) -> None:
    """The sequential step in place: after each node moves, only the errors of the
    terms that touch it are refreshed (the prediction of a term it sources, the
    error of a term that predicts it, whose prediction was made when its own source
    last moved), so a sweep costs what a parallel step does.
    `before_node(j, errors)` sees the errors just before node j moves; it may return
    the transposes it computed from them (term -> map^T h), which j's step then uses
    (`rules.OnArrival`: one pass back through a map gives both). With `repredict`
    False the predictions a moved node makes are not made again: each term keeps its
    error on arrival (its target has moved, its source not yet; the last sweep of
    errors on arrival, whose end state nothing reads)."""
    etas = eta if isinstance(eta, (list, tuple)) else [eta] * len(xs)
    for j in net.sweep_from_label:
        if free[j]:
            transposed = before_node(j, buffers.errors) if before_node is not None else None
            node_step(net, j, xs[j], etas[j], buffers.errors, transposed)
            buffers.refresh(xs, net.targets_of[j], predict=False)
            if repredict:
                buffers.refresh(xs, net.sources_of[j])


def parallel_schedule(net, xs, free, eta, buffers, before_node=None, repredict=True, node_step=step_node_):
    """One step of every free node from the same errors, then every error again."""
    def advance(errors):
        step_in_place(net, xs, free, eta, errors, node_step)
        return buffers.update(xs)
    return advance


def sequential_schedule(net, xs, free, eta, buffers, before_node=None, repredict=True, node_step=step_node_):
    """One sweep, node by node from the label; the buffers stay current as it goes."""
    def advance(errors):
        sweep_in_place(net, xs, free, eta, buffers, before_node, repredict, node_step)
        return buffers.errors
    return advance


# how one inference step moves the free nodes: schedule name -> the step's maker
SCHEDULE_STEPS = {"parallel": parallel_schedule, "sequential": sequential_schedule}


def settle(net: PCNetwork, xs: list[Tensor], free: Sequence[bool], settings: Inference,
           record: bool = False, predictions: Optional[dict] = None,
           before_node: Optional[Callable[[int, list], Optional[dict]]] = None,
           repredict: bool = True) -> SettleResult:
    """Up to `settings.T_infer` inference steps on the free latents of `xs` (in place).

    Terms whose free target is a leaf are dropped (see `PCNetwork.active_terms`) and
    their nodes filled in at the end. The errors are computed T+1 times, the last
    after the last step, so learning reuses them with no extra forward pass. With
    `record`, each term's energy at every step is kept on the device (no host
    sync); with `settings.settle_tol`, inference stops once the relative drop over
    the last tenth of the steps is below it (that check syncs with the host).
    `predictions` (from `initial_state`) are the current state's predictions, reused.
    `before_node(j, errors)` (sequential schedule) sees the errors just before node j
    moves (the errors a term has when the sweep reaches its source: `rules.OnArrival`);
    `repredict` False (sequential schedule) leaves every term at its error on arrival:
    the returned errors' values (eps, h) are those, while their sources have moved.
    """
    active = net.active_terms(free)
    T, eta, tol = settings.T_infer, settings.eta_infer, settings.settle_tol
    steps, trace, start = 0, None, None
    if any(active):
        compiled = settings.compile_settle
        buffers = None if compiled else ErrorBuffers(net, xs, free, active, predictions)
        errors = net.errors(xs, active) if compiled else buffers.update(xs, first=True)
        start = net.energies(errors)
        trace = [start] if record else None
        every = max(1, T // 10)
        if settings.step_size != "fixed":
            eta = step_sizes(net, free, active, settings)
        last_checked = net.energies(errors).sum().item() if tol is not None else None
        if compiled:
            compiled_fn = compiled_step()

            def advance(errors):
                xs[:], errors = compiled_fn(net, xs, errors, free, eta, active)
                return errors
        else:
            momentum = getattr(settings, "momentum", 0.0)
            node_step = Momentum(momentum, xs, free).step_node_ if momentum else step_node_
            advance = SCHEDULE_STEPS[settings.schedule](net, xs, free, eta, buffers, before_node, repredict, node_step)
        for t in range(T):
            errors = advance(errors)
            steps = t + 1
            if record:
                trace.append(net.energies(errors))
            if tol is not None and steps % every == 0:
                now = net.energies(errors).sum().item()
                if last_checked - now < tol * abs(last_checked):
                    break
                last_checked = now
    else:
        errors = [None] * len(net.terms)
    net.complete(xs, active)
    return SettleResult(list(errors), torch.stack(trace) if record else None, steps, active, start)


def relative_drop(trace_total: Tensor, fraction: float = 0.1) -> float:
    """Relative energy drop over the last `fraction` of a settle's steps.

    `trace_total` is the total energy per step, shape (steps + 1,). Near zero means
    the latents have settled; a large value means inference was cut off mid-descent;
    a negative value means the energy rose (inference diverging).
    """
    n = trace_total.numel() - 1
    k = max(1, int(round(n * fraction)))
    start, end = trace_total[n - k].item(), trace_total[n].item()
    return (start - end) / max(abs(start), 1e-30)
