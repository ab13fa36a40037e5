"""How networks are assembled: the one file that knows about direction.

`NetworkSpec` is the description a config gives; `build_network` turns it into a
`PCNetwork` (nodes + terms). Two builders, one per direction:

- **discriminative**: the data at the top, clamped, predicting down a chain of
  layers to the label at the bottom (clamped in training, free at evaluation,
  where the exact state is the feedforward sweep). Layers are given either as
  `dims` (an MLP: sizes, input first) or as `layers`, a list of blocks, each one
  latent layer: a sequence of primitives and an activation, e.g.

      layers:
        - {conv: {channels: 32, kernel: 3, padding: 1}, activation: relu}
        - {conv: {channels: 64, kernel: 3, padding: 1}, maxpool: {kernel: 2}, activation: relu}
        - {flatten: {}, dense: {units: 128}, activation: relu}
        - {dense: {}}                      # the last block predicts the label

  Block keys: any registered primitive (in order), `activation` (default linear),
  `skip: true` (the block's prediction is its input plus the map: a residual
  layer), `repeat: n` (n copies). A block's output shape is its map's.
- **generative** (the seed's model): the data at the bottom, clamped; layer l+1
  predicts layer l through W(l) and f(l) = activations[l]; the label is one more
  node, predicted from the top latent by a linear readout (the seed's R).
  Optional amortizer: bottom-up terms V(l) that guess each latent from the one
  below (ReLU, linear at the top), learned by their own local rule.

`parametrization: mupc` applies muPC's multipliers (Innocenti et al. 2025) in the
predictions of dense maps, with N(0, 1) weights: 1/sqrt(fan-in) for the first
layer, 1/sqrt(N L) for the hidden layers with skips (1/sqrt(N) without), 1/N for
the label's layer (N: width, L: number of hidden layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from pcn_lightning.activations import get_activation
from pcn_lightning.errors import ConfigError
from pcn_lightning.network import Node, PCNetwork
from pcn_lightning.primitives import REGISTRY, Map, Sequential, build_map
from pcn_lightning.primitives.skip import Residual
from pcn_lightning.terms import Term

DIRECTIONS = ("generative", "discriminative")
PARAMETRIZATIONS = ("standard", "mupc")
BLOCK_KEYS = ("activation", "skip", "repeat", "precision")


@dataclass
class NetworkSpec:
    """A network description.

    Args:
        direction: "discriminative" (data at the top, predicting down to the label)
            or "generative" (the seed's: data at the bottom, a readout on the top).
        dims: an MLP's sizes, input first, e.g. [784, 512, 256] (the label's size
            comes from the data).
        activations: for dims: one name for all layers or one per weight matrix
            (input side first): relu, linear, tanh, sigmoid, leaky_relu, gelu.
        layers: discriminative only, instead of dims: a list of blocks (see the
            module docstring); conv nets, residual nets.
        precisions: fixed precision of each term (one per weight matrix plus the
            label's term, input side first); None: a block's own `precision`, else 1.
        amortized: generative only: learn a bottom-up guess of the latents.
        parametrization: "standard" (xavier-uniform weights, no multipliers) or
            "mupc" (N(0, 1) weights, muPC's multipliers in the predictions).
        label_energy: the label's term: "gaussian" (pi/2 ||y - prediction||^2, the
            seed's) or "categorical" (-pi log softmax(prediction)[y]: a
            cross-entropy energy with the local error y - softmax).
    """

    direction: str = "generative"
    dims: Optional[list[int]] = None
    activations: Union[str, list[str]] = "relu"
    layers: Optional[list[Union[str, dict[str, Any]]]] = None
    precisions: Optional[list[float]] = None
    amortized: bool = False
    parametrization: str = "standard"
    label_energy: str = "gaussian"

    def __post_init__(self) -> None:
        if self.label_energy not in ("gaussian", "categorical"):
            raise ConfigError(f"unknown label_energy {self.label_energy!r}; choose 'gaussian' or 'categorical'")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"unknown direction {self.direction!r}; choose one of {list(DIRECTIONS)}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"unknown parametrization {self.parametrization!r}; choose one of {list(PARAMETRIZATIONS)}")
        if self.dims is not None:
            self.dims = [int(d) for d in self.dims]
            if len(self.dims) < 2:
                raise ConfigError(
                    f"dims={self.dims} needs at least two sizes (input and one latent layer), "
                    "e.g. --model.dims '[784, 256, 10]'"
                )
            if any(d <= 0 for d in self.dims):
                raise ConfigError(f"every size must be positive; got dims={self.dims}")
        if self.layers is not None and self.dims is None and self.direction != "discriminative":
            raise ConfigError("layers (a list of blocks) build direction='discriminative' networks; "
                              "the generative network takes dims")
        if self.amortized and self.direction != "generative":
            raise ConfigError("amortized=True needs direction='generative' (the discriminative sweep is already exact)")


def resolve_activations(activations: Union[str, Sequence[str]], n_layers: int) -> list[str]:
    """One activation name per weight matrix (a single name applies to all)."""
    if isinstance(activations, str):
        return [activations] * n_layers
    names = list(activations)
    if len(names) != n_layers:
        raise ConfigError(
            f"activations has {len(names)} entries but dims has {n_layers} weight "
            f"matrices; give {n_layers} names (one per layer, input side first) "
            "or a single name for all"
        )
    return names


def term_precisions(spec: NetworkSpec, n_terms: int) -> list[float]:
    if spec.precisions is None:
        return [1.0] * n_terms
    if len(spec.precisions) != n_terms:
        raise ConfigError(
            f"precisions has {len(spec.precisions)} entries; give {n_terms} (one per weight "
            "matrix and one for the readout, in the order of eta_learn)"
        )
    out = []
    for p in spec.precisions:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0 or not math.isfinite(p):
            raise ConfigError(f"precisions must be positive numbers; got {p!r}")
        out.append(float(p))
    return out


def build_network(spec: NetworkSpec, input_shape: Sequence[int], num_classes: int) -> PCNetwork:
    """The PCNetwork a spec describes, for data of `input_shape` and `num_classes` labels."""
    input_shape = tuple(int(s) for s in input_shape)
    if (spec.dims is None) == (spec.layers is None):
        raise ConfigError("describe the network with either dims (an MLP) or layers (a list of blocks), not both "
                          "(set --model.dims null to use layers)" if spec.dims is not None
                          else "the network needs dims (an MLP) or layers (a list of blocks)")
    if num_classes <= 0:
        raise ConfigError(f"every size must be positive; got output_dim={num_classes}")
    if spec.dims is not None and spec.dims[0] != math.prod(input_shape):
        raise ConfigError(
            f"dims[0]={spec.dims[0]} but the data has {math.prod(input_shape)} inputs per sample; "
            f"set --model.dims so that it starts with {math.prod(input_shape)}"
        )
    if spec.direction == "generative":
        return _generative(spec, math.prod(input_shape), num_classes)
    blocks = _mlp_blocks(spec) if spec.dims is not None else expand_blocks(spec.layers)
    shape = (math.prod(input_shape),) if spec.dims is not None else input_shape
    return _discriminative(spec, blocks, shape, num_classes)


# ------------------------------------------------------------ discriminative
def _mlp_blocks(spec: NetworkSpec) -> list[dict]:
    acts = resolve_activations(spec.activations, len(spec.dims) - 1)
    blocks = [{"dense": {"units": d}, "activation": a} for d, a in zip(spec.dims[1:], acts)]
    return blocks + [{"dense": {}}]


def expand_blocks(layers: Sequence[Union[str, dict]]) -> list[dict]:
    """Blocks as dicts, `repeat` unrolled; a bare string names a primitive with defaults."""
    out = []
    for i, block in enumerate(layers):
        if isinstance(block, str):
            block = {block: {}}
        if not isinstance(block, dict) or not block:
            raise ConfigError(f"layers[{i}] must be a primitive name or a mapping, e.g. {{dense: {{units: 128}}}}; got {block!r}")
        block = dict(block)
        repeat = block.pop("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"layers[{i}].repeat must be a positive integer; got {repeat!r}")
        unknown = [k for k in block if k not in REGISTRY and k not in BLOCK_KEYS]
        if unknown:
            raise ConfigError(f"layers[{i}] has unknown key(s) {unknown}; primitives: {sorted(REGISTRY)}, "
                              f"block keys: {list(BLOCK_KEYS)}")
        if not any(k in REGISTRY for k in block):
            raise ConfigError(f"layers[{i}] names no primitive; give one of {sorted(REGISTRY)}")
        out += [dict(block) for _ in range(repeat)]
    if len(out) < 1:
        raise ConfigError("layers needs at least one block (the last one predicts the label)")
    return out


def block_precisions(spec: NetworkSpec, blocks: list[dict]) -> list[float]:
    """One precision per block's term: the block's own `precision`, else the spec's
    `precisions` list, else 1 (giving both is an error: one place says it)."""
    given = [i for i, b in enumerate(blocks) if "precision" in b]
    if not given:
        return term_precisions(spec, len(blocks))
    if spec.precisions is not None:
        raise ConfigError("precisions are given twice: as the list `precisions` and as a block's `precision`; "
                          "keep one of them")
    out = []
    for i, b in enumerate(blocks):
        p = b.get("precision", 1.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ConfigError(f"the precision of block {i} must be a positive number; got {p!r}")
        out.append(float(p))
    return out


def _block_map(block: dict, in_shape: tuple, extra: dict) -> Map:
    maps, shape = [], in_shape
    names = [k for k in block if k in REGISTRY]
    for n, name in enumerate(names):
        args = block[name]
        if n == len(names) - 1 and name in extra:
            args = {**(args if isinstance(args, dict) else {}), **extra[name]}
        m = build_map(name, shape, args)
        maps.append(m)
        shape = m.out_shape
    m = maps[0] if len(maps) == 1 else Sequential(in_shape, maps)
    if block.get("skip"):
        if m.out_shape != in_shape:
            raise ConfigError(f"a skip block must keep its input's shape {in_shape}; this one gives {m.out_shape}")
        m = Residual(in_shape, m)
    return m


def _discriminative(spec: NetworkSpec, blocks: list[dict], input_shape: tuple, num_classes: int) -> PCNetwork:
    """Nodes, bottom first: [label, hidden L, ..., hidden 1, data]; terms input side first."""
    n = len(blocks)
    last = blocks[-1]
    last_prim = [k for k in last if k in REGISTRY][-1]
    if last_prim not in ("dense", "token_dense"):
        raise ConfigError(f"the last block predicts the label and must end in dense (token_dense for a label at "
                          f"every position); it ends in {last_prim!r}")
    units = (last[last_prim] or {}).get("units")
    if units is not None and units != num_classes:
        raise ConfigError(f"the last block predicts the {num_classes} classes; its units is {units}")
    scales = _mupc_scales(spec, blocks, input_shape, num_classes)
    precisions = block_precisions(spec, blocks)
    maps, shapes = [], [input_shape]
    for i, block in enumerate(blocks):
        extra = {last_prim: {"units": num_classes}} if i == n - 1 else {}
        m = _block_map(block, shapes[-1], extra)
        if scales is not None:
            _apply_mupc(m, scales[i])
        maps.append(m)
        shapes.append(m.out_shape)
    # node index of hidden layer i (1..n-1) and of the data
    data = n
    nodes = [Node("label", shapes[-1], "label")]  # (classes,), or (positions, classes) for a sequence
    nodes += [Node(f"layer{i}", shapes[i], "latent") for i in range(n - 1, 0, -1)]
    nodes += [Node("input", input_shape, "data")]
    terms = []
    for i, (block, m) in enumerate(zip(blocks, maps)):
        source = data - i  # the data for i = 0, hidden layer i above it
        target = source - 1
        name = "readout" if i == n - 1 else f"layer{i + 1}"
        act = get_activation(block.get("activation", "linear") if i < n - 1 else "linear")
        energy = spec.label_energy if i == n - 1 else "gaussian"
        terms.append(Term(name, target, source, m, act, precisions[i], energy))
    return PCNetwork(nodes, terms, direction="discriminative")


def _mupc_scales(spec: NetworkSpec, blocks: list[dict], input_shape: tuple, num_classes: int) -> Optional[list[float]]:
    if spec.parametrization != "mupc":
        return None
    L = len(blocks)  # weight layers (jpc's L: hidden layers + 1)
    widths = []
    for b in blocks[:-1]:
        d = b.get("dense")
        if not isinstance(d, dict) or "units" not in d:
            raise ConfigError("parametrization 'mupc' is defined for dense networks: every hidden block needs dense units")
        widths.append(int(d["units"]))
    scales = [1.0 / math.sqrt(math.prod(input_shape))]
    for b, w_in in zip(blocks[1:-1], widths[:-1]):
        scales.append(1.0 / math.sqrt(w_in * L) if b.get("skip") else 1.0 / math.sqrt(w_in))
    scales.append(1.0 / widths[-1] if widths else 1.0)
    return scales


def _apply_mupc(m: Map, scale: float) -> None:
    from pcn_lightning.primitives.dense import Dense

    dense = [d for d in m.modules() if isinstance(d, Dense)]
    for d in dense:
        d.scale = scale
        d.reset_parameters("normal")


# ---------------------------------------------------------------- generative
def _generative(spec: NetworkSpec, input_dim: int, num_classes: int) -> PCNetwork:
    """Nodes [data, x(1), ..., x(L), label]; terms W(0..L-1) then the readout R."""
    from pcn_lightning.primitives.dense import Dense

    dims = spec.dims
    L = len(dims) - 1
    acts = resolve_activations(spec.activations, L)
    precisions = term_precisions(spec, L + 1)
    nodes = [Node("input", (dims[0],), "data")] + [Node(f"latent{l}", (dims[l],), "latent") for l in range(1, L + 1)]
    nodes.append(Node("label", (num_classes,), "label"))
    terms = [Term(f"layer{l}", l, l + 1, Dense((dims[l + 1],), dims[l]), get_activation(acts[l]), precisions[l])
             for l in range(L)]
    readout = Dense((dims[L],), num_classes)
    terms.append(Term("readout", L + 1, L, readout, get_activation("linear"), precisions[L], spec.label_energy))
    amortizer = []
    if spec.amortized:  # V(l) guesses x(l+1) from x(l): ReLU below the top, linear at the top
        for l in range(L):
            g = get_activation("relu" if l < L - 1 else "linear")
            amortizer.append(Term(f"amort{l}", l + 1, l, Dense((dims[l],), dims[l + 1]), g))
    if spec.parametrization != "standard":
        raise ConfigError("parametrization 'mupc' is built for direction='discriminative' networks")
    return PCNetwork(nodes, terms, amortizer, direction="generative")


# ------------------------------------------------------------- the twin's path
def twin_forward(net: PCNetwork, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
    """The feedforward classifier of the same parameters, for the backprop twin:
    input -> label scores, differentiable by autograd (with `logits`, the label
    term's pre-activation: a categorical label's logits rather than its softmax).

    Discriminative: the prediction sweep itself. Generative: up through the
    transposes of the top-down maps (h = f(l)(h @ W(l))), then the readout.
    """
    x = net.batch_input(x)
    if net.direction == "discriminative":
        xs = [None] * len(net.nodes)
        xs[net.data] = x
        if not logits:
            net.sweep(xs, net.terms, net.sweep_order)
            return xs[net.label]
        label_terms = [k for k in net.sweep_order if net.terms[k].target == net.label]
        net.sweep(xs, net.terms, [k for k in net.sweep_order if k not in label_terms])
        return sum(net.terms[k].map.predict(xs[net.terms[k].source])[0] for k in label_terms)
    h = x
    for t in net.terms[:-1]:
        h = t.act.f(t.map.transpose(h, (None, None)))
    return net.terms[-1].map.predict(h)[0]
