"""The predictive-coding equations of the seed's section 4, as pure tensor functions.

Notation (batch-first, so a vector of the seed is a row here):

    x(l)    latent of layer l, shape (B, d_l); x(0) is the bottom of the chain
    W(l)    weights with which layer l+1 predicts layer l, shape (d_l, d_{l+1})
    a(l)    = x(l+1) @ W(l).T                  preactivation
    xhat(l) = f(l)(a(l))                       top-down prediction of x(l)
    eps(l)  = x(l) - xhat(l)                   prediction error
    h(l)    = f(l)'(a(l)) * eps(l)             error modulated by the local slope
    E       = 1/2 sum_l ||eps(l)||^2           energy, summed over the batch

An optional supervised readout R (shape (C, d_L)) predicts the label y from the
top latent: eps_y = y - x(L) @ R.T adds 1/2 ||eps_y||^2 to E. It is the seed's
readout during training; with y absent (evaluation) the term is dropped.

Optional fixed precisions pi(l) (and pi_y) weight each term: E = 1/2 sum_l pi(l)
||eps(l)||^2 (the seed's announced "precision weighting"). Every formula below
then carries pi: h(l) = pi(l) f'(a(l)) * eps(l), dE/dx(l) = pi(l) eps(l) - ...,
dE/dR = -pi_y eps_y.T @ x(L). With all pi = 1 (the default) they are the seed's.

Inference (gradient descent on E for the free latents, section 4):

    dE/dx(l) = eps(l) - h(l-1) @ W(l-1)        (first term absent for the top,
                                                second absent for x(0))
    dE/dx(L) gets - eps_y @ R from the readout
    x(l)    <- x(l) - eta_infer * dE/dx(l)

Learning (the Hebbian outer product, summed over the batch):

    dE/dW(l) = - h(l).T @ x(l+1)               so W += eta h x^T is SGD on E
    dE/dR    = - eps_y.T @ x(L)

Everything here runs without autograd; tests compare it against autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from pcn_lightning.activations import Activation

Tensor = torch.Tensor


@dataclass
class PredictionErrors:
    """Everything one forward sweep of predictions produces, per layer l = 0..L-1."""

    preacts: list[Tensor]  # a(l)
    eps: list[Tensor]  # eps(l)
    h: list[Tensor]  # h(l)
    eps_y: Optional[Tensor] = None  # readout error y - x(L) @ R.T, when supervised
    pi: Optional[list[float]] = None  # precision of each layer's error (None: all 1)
    pi_y: float = 1.0  # precision of the readout error

    def precision(self, l: int) -> float:
        return 1.0 if self.pi is None else self.pi[l]


@dataclass
class SettleResult:
    """What `settle` returns: the errors at the settled state and the energy trace."""

    errors: PredictionErrors  # errors of the final latents: reuse them for learning
    trace: Optional[Tensor]  # (steps + 1, n_terms) per-layer energies, if recorded
    steps: int  # inference steps actually taken (< T when stopped early)


def prediction_errors(
    xs: Sequence[Tensor],
    weights: Sequence[Tensor],
    acts: Sequence[Activation],
    readout: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    out: Optional[PredictionErrors] = None,
    precisions: Optional[Sequence[float]] = None,
    precision_y: float = 1.0,
    fixed_preacts: Optional[Sequence[Optional[Tensor]]] = None,
) -> PredictionErrors:
    """a(l), eps(l), h(l) for every layer, and eps_y when a readout and label are given.

    With `out` (from `error_buffers`), the results are written into its tensors
    instead of new ones: the settle loop allocates nothing per step. A tensor in
    `fixed_preacts[l]` is used as a(l) instead of the product: within a settle the
    weights are fixed, so the prediction from a clamped layer x(l+1) never changes.
    """
    pi = list(precisions) if precisions is not None else None
    if out is not None:
        for l, (W, f) in enumerate(zip(weights, acts)):
            if fixed_preacts is not None and fixed_preacts[l] is not None:
                a = out.preacts[l]
                if a.data_ptr() != fixed_preacts[l].data_ptr():
                    a.copy_(fixed_preacts[l])
            else:
                a = torch.matmul(xs[l + 1], W.T, out=out.preacts[l])
            f.errors_into(a, xs[l], out.eps[l], out.h[l])
            if pi is not None and pi[l] != 1.0:
                out.h[l].mul_(pi[l])
        out.pi, out.pi_y = pi, precision_y
        if out.eps_y is not None:
            torch.matmul(xs[-1], readout.T, out=out.eps_y)
            torch.sub(y, out.eps_y, out=out.eps_y)
        return out
    preacts, eps, h = [], [], []
    for l, (W, f) in enumerate(zip(weights, acts)):
        a = fixed_preacts[l] if fixed_preacts is not None and fixed_preacts[l] is not None else xs[l + 1] @ W.T
        e = xs[l] - f.f(a)
        preacts.append(a)
        eps.append(e)
        hl = e if f.is_identity else f.df(a) * e
        h.append(hl * pi[l] if pi is not None and pi[l] != 1.0 else hl)
    eps_y = None
    if readout is not None and y is not None:
        eps_y = y - xs[-1] @ readout.T
    return PredictionErrors(preacts, eps, h, eps_y, pi, precision_y)


def error_buffers(
    xs: Sequence[Tensor],
    acts: Sequence[Activation],
    supervised: bool,
    n_out: int = 0,
    precisions: Optional[Sequence[float]] = None,
) -> PredictionErrors:
    """Preallocated tensors for `prediction_errors(..., out=...)`."""
    preacts = [torch.empty_like(x) for x in xs[:-1]]
    eps = [torch.empty_like(x) for x in xs[:-1]]
    shared = [f.is_identity and (precisions is None or precisions[l] == 1.0) for l, f in enumerate(acts)]
    h = [e if same else torch.empty_like(e) for e, same in zip(eps, shared)]
    eps_y = xs[-1].new_empty(xs[-1].shape[0], n_out) if supervised else None
    return PredictionErrors(preacts, eps, h, eps_y)


def layer_energies(errors: PredictionErrors) -> Tensor:
    """1/2 ||eps(l)||^2 summed over the batch, per layer (the readout term last, if any)."""
    terms = [(errors.precision(l), e) for l, e in enumerate(errors.eps)]
    if errors.eps_y is not None:
        terms.append((errors.pi_y, errors.eps_y))
    return torch.stack([0.5 * p * torch.linalg.vector_norm(e).square() for p, e in terms])


def sample_energies(errors: PredictionErrors) -> Tensor:
    """The energy of each sample, shape (B,): 1/2 sum_l pi(l) ||eps(l)_b||^2."""
    E = sum(0.5 * errors.precision(l) * e.pow(2).sum(1) for l, e in enumerate(errors.eps))
    if errors.eps_y is not None:
        E = E + 0.5 * errors.pi_y * errors.eps_y.pow(2).sum(1)
    return E


def top_down_sweep(x_top: Tensor, weights: Sequence[Tensor], acts: Sequence[Activation]) -> list[Tensor]:
    """Predictions all the way down: x(l) = f(l)(W(l) x(l+1)) from a given top latent.

    This is where every error is zero, the energy minimum when nothing below the
    top is clamped: the generative model's sample for that top latent.
    """
    xs = [x_top]
    for W, f in zip(reversed(weights), reversed(list(acts))):
        xs.insert(0, f.f(xs[0] @ W.T))
    return xs


def energy(errors: PredictionErrors) -> Tensor:
    """The total energy E, summed over the batch."""
    return layer_energies(errors).sum()


def latent_gradients(
    xs: Sequence[Tensor],
    weights: Sequence[Tensor],
    errors: PredictionErrors,
    free: Sequence[bool],
    readout: Optional[Tensor] = None,
) -> list[Optional[Tensor]]:
    """dE/dx(l) for every free layer (None for clamped ones)."""
    top = len(xs) - 1
    grads: list[Optional[Tensor]] = []
    for l in range(len(xs)):
        if not free[l]:
            grads.append(None)
            continue
        g = errors.precision(l) * errors.eps[l] if l < top else torch.zeros_like(xs[l])
        if l > 0:
            g = g - errors.h[l - 1] @ weights[l - 1]
        if l == top and errors.eps_y is not None:
            g = g - errors.pi_y * (errors.eps_y @ readout)
        grads.append(g)
    return grads


def inference_step(
    xs: list[Tensor],
    weights: Sequence[Tensor],
    errors: PredictionErrors,
    free: Sequence[bool],
    eta_infer: float,
    readout: Optional[Tensor] = None,
) -> None:
    """x(l) <- x(l) - eta_infer * dE/dx(l) for every free layer, in place.

    Written as x(l) -= eta eps(l), then x(l) += eta h(l-1) @ W(l-1) fused into one
    addmm (and x(L) += eta eps_y @ R): the same update as `latent_gradients`
    without allocating the gradient. `errors` must belong to the current xs; they
    are separate tensors, so updating one layer does not disturb another's error.
    """
    top = len(xs) - 1
    for l, x in enumerate(xs):
        if not free[l]:
            continue
        if l < top:
            x.sub_(errors.eps[l], alpha=eta_infer * errors.precision(l))
        if l > 0:
            x.addmm_(errors.h[l - 1], weights[l - 1], alpha=eta_infer)
        if l == top and errors.eps_y is not None:
            x.addmm_(errors.eps_y, readout, alpha=eta_infer * errors.pi_y)


def settle_step(
    xs: Sequence[Tensor],
    weights: Sequence[Tensor],
    acts: Sequence[Activation],
    free: Sequence[bool],
    eta_infer: float,
    errors: PredictionErrors,
    readout: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    precisions: Optional[Sequence[float]] = None,
    precision_y: float = 1.0,
) -> tuple[list[Tensor], PredictionErrors]:
    """One iteration of `settle` written functionally: the new latents
    x(l) - eta_infer * dE/dx(l) and their errors, with no in-place writes.

    The same arithmetic as `inference_step` followed by `prediction_errors`; this
    form is what `torch.compile` fuses (see `compiled_settle_step`).
    """
    grads = latent_gradients(xs, weights, errors, free, readout)
    new = [x if g is None else x - eta_infer * g for x, g in zip(xs, grads)]
    fixed = [a if not free[l + 1] else None for l, a in enumerate(errors.preacts)]  # clamped predictor
    return new, prediction_errors(new, weights, acts, readout, y, precisions=precisions, precision_y=precision_y,
                                  fixed_preacts=fixed)


_COMPILED_STEP = None


def compiled_settle_step():
    """`settle_step` compiled once per process with torch.compile (inductor)."""
    global _COMPILED_STEP
    if _COMPILED_STEP is None:
        _COMPILED_STEP = torch.compile(settle_step, dynamic=False)
    return _COMPILED_STEP


def settle(
    xs: list[Tensor],
    weights: Sequence[Tensor],
    acts: Sequence[Activation],
    free: Sequence[bool],
    T_infer: int,
    eta_infer: float,
    readout: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    record: bool = False,
    tol: Optional[float] = None,
    check_every: Optional[int] = None,
    precisions: Optional[Sequence[float]] = None,
    precision_y: float = 1.0,
    compiled: bool = False,
) -> SettleResult:
    """Run up to T_infer inference steps on the free latents (in place).

    A prediction made by a clamped layer (the data at the top of the discriminative
    chain) cannot change during a settle: its product is computed once, not T+1 times.
    The errors are computed T+1 times: before every step and once after the last,
    so the returned errors belong to the final latents and learning needs no extra
    forward pass. With `record`, the per-layer energy at every step is kept on the
    device (no host sync). With `tol`, inference stops once the relative energy drop
    over the last `check_every` steps is below `tol` (that check syncs with the host).
    With `compiled`, each step is `compiled_settle_step()` (torch.compile): the same
    arithmetic, fused by the compiler, into fresh tensors rather than buffers.
    """
    supervised = readout is not None and y is not None
    pis = dict(precisions=precisions, precision_y=precision_y)
    buffers = None if compiled else error_buffers(xs, acts, supervised, y.shape[1] if supervised else 0, precisions)
    errors = prediction_errors(xs, weights, acts, readout, y, out=buffers, **pis)
    trace = [layer_energies(errors)] if record else None
    every = check_every or max(1, T_infer // 10)
    last_checked = energy(errors).item() if tol is not None else None
    step = compiled_settle_step() if compiled else None
    fixed = [a if not free[l + 1] else None for l, a in enumerate(errors.preacts)]  # computed once
    steps = 0
    for t in range(T_infer):
        if compiled:
            xs[:], errors = step(xs, weights, acts, free, eta_infer, errors, readout, y, **pis)
        else:
            inference_step(xs, weights, errors, free, eta_infer, readout)
            errors = prediction_errors(xs, weights, acts, readout, y, out=buffers, fixed_preacts=fixed, **pis)
        steps = t + 1
        if record:
            trace.append(layer_energies(errors))
        if tol is not None and steps % every == 0:
            now = energy(errors).item()
            if last_checked - now < tol * abs(last_checked):
                break
            last_checked = now
    return SettleResult(errors, torch.stack(trace) if record else None, steps)


def weight_gradients(
    xs: Sequence[Tensor], errors: PredictionErrors
) -> tuple[list[Tensor], Optional[Tensor]]:
    """dE/dW(l) = -h(l).T @ x(l+1) per layer, and dE/dR = -eps_y.T @ x(L) if supervised."""
    grads = [(h.T @ xs[l + 1]).neg_() for l, h in enumerate(errors.h)]
    grad_readout = (errors.eps_y.T @ xs[-1]).mul_(-errors.pi_y) if errors.eps_y is not None else None
    return grads, grad_readout


def readout_gradient(x_top: Tensor, readout: Tensor, y: Tensor, precision_y: float = 1.0) -> Tensor:
    """dE_y/dR = -pi_y (y - x(L) @ R.T).T @ x(L) for a given top latent x(L).

    The readout's delta rule on any state, for instance the label-free settled one
    that evaluation reads: E_y = pi_y/2 ||y - x(L) @ R.T||^2 with x(L) held fixed.
    """
    eps_y = y - x_top @ readout.T
    return (eps_y.T @ x_top).mul_(-precision_y)


# ----------------------------------------------------------- learned precision
# With a precision pi(l) per energy term learned too, the energy needs the
# Gaussian normalizer, or pi -> 0 would be free: the free energy is
#     F = sum_l [ pi(l)/2 ||eps(l)||^2 - n(l)/2 log pi(l) ]
# (n(l) = number of entries of eps(l), batch included). The latent and weight
# rules are unchanged (the log term holds no x or W). Learning log pi(l):
#     dF/d log pi(l) = pi(l)/2 ||eps(l)||^2 - n(l)/2
# zero at pi(l) = n(l) / ||eps(l)||^2: the inverse mean squared error of the term.


def precision_free_energy(errors: PredictionErrors, log_precisions: Tensor) -> Tensor:
    """F for the given log-precisions (one per energy term, in `layer_energies` order)."""
    eps = list(errors.eps) + ([errors.eps_y] if errors.eps_y is not None else [])
    return sum(0.5 * lp.exp() * e.pow(2).sum() - 0.5 * e.numel() * lp for lp, e in zip(log_precisions, eps))


def precision_gradients(errors: PredictionErrors) -> Tensor:
    """dF/d log pi for every energy term (the readout term last, if any)."""
    eps = list(errors.eps) + ([errors.eps_y] if errors.eps_y is not None else [])
    counts = torch.tensor([e.numel() for e in eps], dtype=eps[0].dtype, device=eps[0].device)
    return layer_energies(errors) - 0.5 * counts


# ------------------------------------------------ amortized (hybrid) inference
# A bottom-up network guesses the settled latents from the data, so settling
# starts near its end. V(l) (shape (d_{l+1}, d_l)) and g(l) predict upwards:
#     xtilde(l+1) = g(l)(V(l) x(l))
# trained on the settled latents x* by its own energy, local to two layers:
#     E_amort = 1/2 sum_l ||x*(l+1) - g(l)(V(l) x*(l))||^2
#     dE_amort/dV(l) = -(g(l)'(b(l)) * delta(l)).T @ x*(l),  b(l) = V(l) x*(l)


def amortized_sweep(x: Tensor, amort: Sequence[Tensor], acts: Sequence[Activation]) -> list[Tensor]:
    """The bottom-up guess [x(1), ..., x(L)] of the latents from the data x(0)."""
    out, h = [], x
    for V, g in zip(amort, acts):
        h = g.f(h @ V.T)
        out.append(h)
    return out


def amortization_gradients(xs: Sequence[Tensor], amort: Sequence[Tensor], acts: Sequence[Activation]) -> list[Tensor]:
    """dE_amort/dV(l), each layer predicting the settled x*(l+1) from the settled x*(l)."""
    grads = []
    for l, (V, g) in enumerate(zip(amort, acts)):
        b = xs[l] @ V.T
        delta = xs[l + 1] - g.f(b)
        k = delta if g.is_identity else g.df(b) * delta
        grads.append((k.T @ xs[l]).neg_())
    return grads


def amortization_energy(xs: Sequence[Tensor], amort: Sequence[Tensor], acts: Sequence[Activation]) -> Tensor:
    """E_amort, summed over the batch."""
    return sum(0.5 * (xs[l + 1] - g.f(xs[l] @ V.T)).pow(2).sum() for l, (V, g) in enumerate(zip(amort, acts)))


def relative_drop(trace_total: Tensor, fraction: float = 0.1) -> float:
    """Relative energy drop over the last `fraction` of a settle's steps.

    `trace_total` is the total energy per step, shape (steps + 1,). Near zero means
    the latents have settled; a large value means inference was cut off mid-descent.
    """
    n = trace_total.numel() - 1
    k = max(1, int(round(n * fraction)))
    start, end = trace_total[n - k].item(), trace_total[n].item()
    return (start - end) / max(abs(start), 1e-30)
