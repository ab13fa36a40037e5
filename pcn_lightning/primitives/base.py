"""The primitive interface: a map with which one layer predicts another.

A term of the energy predicts a target layer from a source layer:

    a   = map.predict(x_source)          the prediction's pre-activation
    eps = x_target - f(a)                its error
    h   = pi * f'(a) * eps               the error at the pre-activation (h = -dE/da)

and everything a predictive coding network needs from the map is hand-written:

    map.transpose(h, ctx)      = J^T h, the error's way back to the source:
                                 dE/dx_source = -map.transpose(h, ctx)
    map.weight_grads(h, ctx)   = dE/dtheta for each of the map's parameters
                                 (the Hebbian product, minus sign included)

`predict` returns `(a, ctx)`; ctx holds what the two rules need (for a linear map,
the source itself). A rule must not read a state tensor through ctx other than
the one `predict` saw: the settle loop updates the latents in place, so a map
whose transpose depends on x (a pre-activation, a max-pool) keeps what it needs
(the slope, the winning index) in ctx at predict time.

A new primitive is a subclass with these methods, registered with
`@register("name")`; the network description (`layers:` in a config) refers to it
by that name, and tests/unit/test_primitives.py checks every registered primitive's
rules against autograd through its `example()`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from pcn_lightning.errors import ConfigError

Tensor = torch.Tensor
Shape = tuple[int, ...]

REGISTRY: dict[str, type["Map"]] = {}


def register(name: str) -> Callable[[type["Map"]], type["Map"]]:
    """Class decorator: make a primitive available to network descriptions as `name`."""

    def add(cls: type["Map"]) -> type["Map"]:
        REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return add


class Map(nn.Module):
    """A predicting map from a source layer (per-sample shape `in_shape`) to a target."""

    registry_name = "map"

    def __init__(self, in_shape: Shape) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)

    @property
    def out_shape(self) -> Shape:
        raise NotImplementedError

    def extra_repr(self) -> str:
        """What `print(net)` shows: the per-sample shapes in and out."""
        try:
            out = self.out_shape
        except NotImplementedError:
            out = "?"
        return f"{self.in_shape} -> {out}"

    # -- the three hand-written rules ------------------------------------------
    def predict(self, x: Tensor) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def transpose(self, h: Tensor, ctx: Any) -> Tensor:
        raise NotImplementedError

    def weight_grads(self, h: Tensor, ctx: Any) -> list[Tensor]:
        """dE/dp for every p in self.parameters(), in that order (empty: no parameters)."""
        return []

    # -- optional fast paths (same numbers, fewer allocations) --------------------
    def transpose_and_weight_grads(self, h: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:
        """(transpose(h), weight_grads(h)) from one pass back through the map: what a
        term needs when it learns on arrival and its source moves next. Maps whose two
        rules share work (attention's softmax transpose, a Sequential's chain) say so
        here; the rest make the two calls."""
        return self.transpose(h, ctx), self.weight_grads(h, ctx)

    def predict_into(self, x: Tensor, out: Tensor) -> Any:
        """Write a into `out` (a preallocated tensor of a's shape); return ctx."""
        a, ctx = self.predict(x)
        out.copy_(a)
        return ctx

    def transpose_add_(self, dst: Tensor, h: Tensor, ctx: Any, alpha: float) -> None:
        """dst += alpha * J^T h, in place."""
        dst.add_(self.transpose(h, ctx), alpha=alpha)

    def reset_parameters(self, init: str = "xavier_uniform") -> None:
        """Initialize the parameters ("xavier_uniform" or "normal": N(0, 1))."""

    def lipschitz(self) -> float:
        """An upper bound (or a close estimate) of ||J||_2, how much the map can stretch
        a change of its source: what a curvature-normalized inference step divides by."""
        return 1.0

    def lipschitz_bound(self) -> float:
        """`lipschitz()`, recomputed only when a parameter changed: a settle per
        character (the language model) must not rerun the power iterations, and their
        host sync, between updates. A change is seen by the tensor's version counter
        (in-place edits, load_state_dict) or storage (replaced), and by
        `forget_lipschitz()`, which the optimizers of `optim.make_optimizer` call after
        every step: fused Adam updates the weights without bumping their versions."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        cached = self.__dict__.get("_lipschitz_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.lipschitz())
            self.__dict__["_lipschitz_cache"] = cached
        return cached[1]

    def forget_lipschitz(self) -> None:
        """Drop the cached bound (the parameters changed behind the version counters)."""
        self.__dict__.pop("_lipschitz_cache", None)

    # -- for the generic test -------------------------------------------------------
    @classmethod
    def example(cls) -> "Map":
        """A small instance for the autograd test of this primitive's rules."""
        raise NotImplementedError


def spectral_norm(apply, apply_t, shape: Shape, iterations: int = 8, like: Optional[Tensor] = None) -> float:
    """||A||_2 by power iteration on A^T A, with A and A^T given as functions of one sample."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn((1, *shape), generator=g, dtype=like.dtype if like is not None else torch.float32)
    if like is not None:
        v = v.to(like.device)
    w = v
    for _ in range(iterations):
        v = w / w.norm().clamp_min(1e-30)
        w = apply_t(apply(v))
    return w.norm().item() ** 0.5  # one host sync, after the last iteration


def build_map(name: str, in_shape: Shape, args: Any = None) -> Map:
    """A registered primitive by name: `args` is a mapping of keyword arguments, or one
    value for the first argument (`maxpool: 2`, `act: gelu`), or None for defaults."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown layer primitive {name!r}; registered: {sorted(REGISTRY)}")
    try:
        if isinstance(args, dict):
            return REGISTRY[name](in_shape, **args)
        return REGISTRY[name](in_shape) if args is None else REGISTRY[name](in_shape, args)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for {name!r} ({args}): {exc}") from None
