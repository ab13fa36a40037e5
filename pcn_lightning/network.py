"""`PCNetwork`: nodes (layers of latents) joined by energy terms, as a graph.

Every network is the same object: a list of nodes (the data, the label, the
latents) and a list of terms, each predicting one node from another. The energy
is the sum of the terms; inference and learning need nothing else:

    dE/dx(j) = sum over terms predicting j of    pi * eps
             - sum over terms predicted by j of  map.transpose(h)

How the nodes are joined (which way predictions flow, where the label sits) is
decided once, by the builders in `pcn_lightning.builders`; nothing here asks for a
direction. Two structural facts replace the old direction flags:

- A free node that only receives one prediction (a leaf) settles exactly at that
  prediction, so its term can be dropped from settling and the node filled in
  afterwards (`active_terms`, `complete`). At evaluation the free label is such a
  leaf; in the discriminative network every node becomes one in turn, so its
  label-free inference is exactly the feedforward sweep, with no settling at all.
- `feedforward` init follows the terms outwards from the data, where they lead
  (the discriminative network); `amortized` init follows a separate, learned
  set of bottom-up terms (the generative network's amortizer).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import LATENT_INITS
from pcn_lightning.terms import Term, TermErrors

Tensor = torch.Tensor


@dataclass(frozen=True)
class Node:
    name: str
    shape: tuple[int, ...]  # per sample
    role: str  # "data", "label" or "latent"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class InitialState(NamedTuple):
    """Where a settle starts (`PCNetwork.initial_state`)."""

    xs: list  # one tensor per node (None for a free label, filled in by `complete`)
    free: list  # which nodes settle
    predictions: dict  # term index -> (a, ctx) of the feedforward sweep, for `settle` to reuse


class PCNetwork(nn.Module):
    """Nodes and the terms that join them (plus optional amortizer terms, which
    guess latents bottom-up and are not part of the energy)."""

    def __init__(self, nodes: Sequence[Node], terms: Sequence[Term], amortizer: Sequence[Term] = (),
                 direction: str = "generative") -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.terms = nn.ModuleList(terms)
        self.amortizer = nn.ModuleList(amortizer)
        if direction not in ("generative", "discriminative"):
            raise ConfigError(f"unknown direction {direction!r}; choose 'generative' or 'discriminative'")
        self.direction = direction  # which way predictions flow: to the data, or from it to the label
        roles = [n.role for n in self.nodes]
        if roles.count("data") != 1 or roles.count("label") != 1:
            raise ValueError("a network has exactly one data node and one label node")
        self.data = roles.index("data")
        self.label = roles.index("label")
        n = len(self.nodes)
        self.targets_of = [[k for k, t in enumerate(self.terms) if t.target == j] for j in range(n)]
        self.sources_of = [[k for k, t in enumerate(self.terms) if t.source == j] for j in range(n)]
        self.latent_order = self._latent_order()
        # the term that predicts the label (the readout, or the last layer's map)
        self.label_term = next(k for k, t in enumerate(self.terms) if t.target == self.label)
        self.sweep_from_label = self._order_from(self.label)
        self.sweep_order = self._sweep_order(self.terms)

    # ------------------------------------------------------------- structure
    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]

    def named_weights(self) -> list[tuple[str, nn.Parameter]]:
        """W0, W1, ... (the terms' order: eta_learn's), readout; a map's extra parameters get suffixes."""
        out = []
        for k, t in enumerate(self.terms):
            base = "readout" if t.target == self.label else f"W{k}"
            out += [(base if i == 0 else f"{base}_{n.replace('.', '_')}", p)
                    for i, (n, p) in enumerate(t.map.named_parameters())]
        return out

    @property
    def predicts_data(self) -> bool:
        """Some term predicts the data (a generative network: it can generate)."""
        return bool(self.targets_of[self.data])

    @property
    def num_classes(self) -> int:
        return self.nodes[self.label].shape[-1]  # the last axis: a sequence label has one per position

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[self.data].shape

    def _order_from(self, start: int) -> list[int]:
        """Every node, breadth-first from `start` over the terms (the sequential schedule's order)."""
        seen, order, queue = {start}, [start], deque([start])
        while queue:
            j = queue.popleft()
            for k in self.targets_of[j] + self.sources_of[j]:
                t = self.terms[k]
                other = t.source if t.target == j else t.target
                if other not in seen:
                    seen.add(other)
                    order.append(other)
                    queue.append(other)
        return order

    def _latent_order(self) -> list[int]:
        """Latent nodes in breadth-first order from the data (the order random
        latents are drawn in, so a seed gives the same state in any network)."""
        return [j for j in self._order_from(self.data) if self.nodes[j].role == "latent"]

    def _sweep_order(self, terms: Sequence[Term]) -> list[int]:
        """Terms in the order a prediction sweep from the data can run them."""
        known, order, pending = {self.data}, [], list(range(len(terms)))
        progress = True
        while progress:
            progress = False
            for k in list(pending):
                if terms[k].source in known and terms[k].target not in known:
                    order.append(k)
                    known.add(terms[k].target)
                    pending.remove(k)
                    progress = True
        return order

    def active_terms(self, free: Sequence[bool]) -> list[bool]:
        """Terms that settling must handle. A free node whose only active term is
        the one predicting it sits exactly at that prediction: drop that term
        (repeatedly), and fill the node in afterwards with `complete`."""
        active = [True] * len(self.terms)
        changed = True
        while changed:
            changed = False
            for j, node_free in enumerate(free):
                if not node_free:
                    continue
                into = [k for k in self.targets_of[j] if active[k]]
                out = [k for k in self.sources_of[j] if active[k]]
                if len(into) == 1 and not out:
                    active[into[0]] = False
                    changed = True
        return active

    # ---------------------------------------------------------------- state
    def batch_input(self, x: Tensor) -> Tensor:
        """The data node's values from a batch: (B, ...) reshaped to (B, *input_shape)."""
        shape = self.input_shape
        if x.dim() < 1 or math.prod(x.shape[1:]) != math.prod(shape):
            one = " (one sample? add the batch dimension: x[None])" if x.numel() == math.prod(shape) else ""
            raise ConfigError(
                f"the network takes inputs of shape (B, {', '.join(map(str, shape))}) "
                f"({math.prod(shape)} values per sample); got a tensor of shape {tuple(x.shape)}{one}"
            )
        return x.reshape(x.shape[0], *shape)

    def checked_input(self, x) -> Tensor:
        """A batch to predict from, as users hand it over: a floating-point tensor of any
        precision, device, layout and batch size (0 included), of the data's shape (B, ...),
        made the weights' dtype and device. Anything else: one ConfigError saying what to pass."""
        if not torch.is_tensor(x):
            raise ConfigError(f"inputs must be a tensor; got {type(x).__name__} (pass torch.as_tensor(x))")
        if not x.is_floating_point():
            raise ConfigError(
                f"inputs must be floating point, preprocessed as the data module does (pixels scaled to "
                f"[0, 1], e.g. x.float() / 255, then standardized if it normalizes); got {x.dtype}"
            )
        weight = next(self.parameters())
        x = self.batch_input(x.to(weight.device, weight.dtype).contiguous())  # the same kernels, bit for bit
        if not torch.isfinite(x).all():
            raise ConfigError("the inputs contain NaN or inf values; a prediction from them would be NaN")
        return x

    def initial_state(self, x: Tensor, y: Optional[Tensor], init: str = "random", std: float = 0.1,
                      generator: Optional[torch.Generator] = None,
                      sample_seeds: Optional[Sequence[int]] = None) -> "InitialState":
        """(xs, free, predictions): the data clamped, the label clamped when `y` (B, C)
        is given, every latent initialized by `init`. A free label starts empty (None):
        it is a leaf, filled in by `complete`. With the feedforward init, `predictions`
        holds the sweep's (a, ctx) of each term it made: `settle` reuses them instead of
        making them again (empty otherwise).

        With `sample_seeds` (one int per sample), random latents are drawn per
        sample from their own generator, so a sample's state does not depend on
        which others share its batch (used at evaluation).
        """
        predictions: dict = {}
        B = x.shape[0]
        xs: list[Optional[Tensor]] = [None] * len(self.nodes)
        xs[self.data] = x
        if y is not None:
            xs[self.label] = y
        free = [n.role == "latent" for n in self.nodes]
        free[self.label] = y is None
        self.check_init(init)
        if init == "feedforward":
            self.sweep(xs, self.terms, [k for k in self.sweep_order if self.nodes[self.terms[k].target].role == "latent"],
                       predictions)
        elif init == "amortized":
            self.sweep(xs, self.amortizer, self._sweep_order(self.amortizer))
        elif init in ("random", "zeros"):
            for j in self.latent_order:
                shape = (B, *self.nodes[j].shape)
                if init == "zeros":
                    xs[j] = torch.zeros(shape, device=x.device, dtype=x.dtype)
                elif sample_seeds is not None:
                    rows = [torch.randn(shape[1:], generator=torch.Generator().manual_seed(int(s)), dtype=x.dtype)
                            for s in sample_seeds]
                    xs[j] = torch.stack(rows).mul_(std).to(x.device)
                else:
                    xs[j] = torch.randn(shape, generator=generator, dtype=x.dtype).mul_(std).to(x.device)
        return InitialState(xs, free, predictions)

    def check_init(self, init: str) -> None:
        """A latent initialization this network can do, or one clear error."""
        if init == "feedforward":
            missing = [self.nodes[j].name for j in self.latent_order
                       if j not in {self.terms[k].target for k in self.sweep_order}]
            if missing:
                raise ConfigError(
                    "latent_init='feedforward' needs direction='discriminative' (predictions that flow "
                    f"from the data to every latent; here {missing} cannot be reached): use 'random', "
                    "'zeros' or 'amortized'"
                )
        elif init == "amortized" and len(self.amortizer) == 0:
            raise ConfigError("latent_init='amortized' needs amortized=True")
        elif init not in LATENT_INITS:
            raise ConfigError(f"unknown latent_init {init!r}; choose one of {list(LATENT_INITS)}")

    @staticmethod
    def sweep(xs: list[Optional[Tensor]], terms: Sequence[Term], order: Sequence[int],
              predictions: Optional[dict] = None) -> None:
        """x(target) = f(map(x(source))) along `order`: where every such error is zero.
        With `predictions` (a dict), each term's (a, ctx) is kept there for settling to reuse."""
        for k in order:
            t = terms[k]
            a, ctx = t.map.predict(xs[t.source])
            xs[t.target] = t.act.f(a)
            if predictions is not None:
                predictions[k] = (a, ctx)

    def label_prediction(self, xs: Sequence[Optional[Tensor]]) -> Tensor:
        """u = f(map(x_source)) of the term predicting the label, on the state `xs`."""
        t = self.terms[self.label_term]
        return t.act.f(t.map.predict(xs[t.source])[0])

    def complete(self, xs: list[Optional[Tensor]], active: Sequence[bool]) -> None:
        """Fill in the nodes of dropped terms with their predictions (their exact optimum)."""
        dropped = [k for k in range(len(self.terms)) if not active[k]]
        order = [k for k in self._sweep_order_from(xs, dropped)]
        self.sweep(xs, self.terms, order)

    def _sweep_order_from(self, xs: Sequence[Optional[Tensor]], subset: Sequence[int]) -> list[int]:
        known = {j for j, x in enumerate(xs) if x is not None} - {self.terms[k].target for k in subset}
        order, pending, progress = [], list(subset), True
        while progress:
            progress = False
            for k in list(pending):
                if self.terms[k].source in known:
                    order.append(k)
                    known.add(self.terms[k].target)
                    pending.remove(k)
                    progress = True
        return order

    # ------------------------------------------------------------- the math
    def errors(self, xs: Sequence[Tensor], active: Optional[Sequence[bool]] = None) -> list[Optional[TermErrors]]:
        """Every active term's a, eps and h on the state `xs` (None for dropped terms)."""
        return [t.errors(xs[t.target], xs[t.source]) if active is None or active[k] else None
                for k, t in enumerate(self.terms)]

    def energies(self, errors: Sequence[Optional[TermErrors]]) -> Tensor:
        """pi/2 ||eps||^2 of every term, summed over the batch (0 for dropped terms)."""
        ref = next(e.eps for e in errors if e is not None)
        zero = ref.new_zeros(())
        return torch.stack([t.energy(e) if e is not None else zero for t, e in zip(self.terms, errors)])

    def sample_energies(self, errors: Sequence[Optional[TermErrors]]) -> Tensor:
        """The energy of each sample, shape (B,)."""
        return sum(t.sample_energy(e) for t, e in zip(self.terms, errors) if e is not None)

    def term_sample_energies(self, errors: Sequence[Optional[TermErrors]], like: Tensor) -> Tensor:
        """Each term's energy per sample, (B, terms) (0 for dropped terms); `like`: any (B, ...) tensor."""
        zero = like.new_zeros(like.shape[0])
        return torch.stack([t.sample_energy(e) if e is not None else zero for t, e in zip(self.terms, errors)], 1)

    def node_gradient(self, j: int, errors: Sequence[Optional[TermErrors]]) -> Optional[Tensor]:
        """dE/dx(j): sum pi eps over the terms predicting j, minus map^T h over the terms j predicts."""
        g = None
        for k in self.targets_of[j]:
            if errors[k] is not None:
                push = self.terms[k].pi * errors[k].eps
                g = push if g is None else g + push
        for k in self.sources_of[j]:
            if errors[k] is not None:
                back = self.terms[k].map.transpose(errors[k].h, errors[k].ctx)
                g = -back if g is None else g - back
        return g

    def latent_gradients(self, errors: Sequence[Optional[TermErrors]], free: Sequence[bool]) -> list[Optional[Tensor]]:
        """dE/dx(j) for every free node (None for clamped ones)."""
        return [self.node_gradient(j, errors) if node_free else None for j, node_free in enumerate(free)]

    def weight_gradients(self, errors: Sequence[Optional[TermErrors]]) -> list[tuple[nn.Parameter, Tensor]]:
        """(parameter, dE/dparameter) for every parameter of every active term."""
        out = []
        for t, e in zip(self.terms, errors):
            if e is not None:
                out += list(zip(t.map.parameters(), t.weight_grads(e)))
        return out

    def direct_energy(self, xs: Sequence[Tensor], active: Optional[Sequence[bool]] = None) -> Tensor:
        """E from its definition, differentiable (for autograd in the tests)."""
        return sum(t.direct_energy(xs[t.target], xs[t.source])
                   for k, t in enumerate(self.terms) if active is None or active[k])
