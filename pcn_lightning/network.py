"""`PredictiveCodingNetwork`: the parameters of a PCN and how they form a chain.

`dims` is input-first in both directions, as in the seed: `[3072, 1000, 500, 10]`.

- generative (the seed's model): the data x(0) sits at the bottom of the chain,
  clamped; layer l+1 predicts layer l through W(l) (shape (dims[l], dims[l+1]))
  and f(l) = activations[l]. A linear readout R (output_dim, dims[-1]) reads the
  label off the top latent; during training it adds the supervised term.
- discriminative: the chain is reversed. The data is at the top, clamped, and
  predicts downwards to the label: hidden layer l+1 is predicted as
  f(l)(W(l) x(l)) with W(l) of shape (dims[l+1], dims[l]), and the readout R is
  the last, linear, link that predicts the label. The label is clamped in
  training and free at test, where the energy minimum is one feedforward sweep.

Both directions have exactly sum(dims[l] * dims[l+1]) + output_dim * dims[-1]
parameters (no biases), the seed's counts.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from pcn_lightning.activations import Activation, get_activation
from pcn_lightning.errors import ConfigError

Tensor = torch.Tensor

DIRECTIONS = ("generative", "discriminative")
LATENT_INITS = ("random", "zeros", "feedforward", "amortized")


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


class PredictiveCodingNetwork(nn.Module):
    """Weights W(0..L-1) and the readout R of a PCN, in either direction."""

    def __init__(
        self,
        dims: Sequence[int],
        output_dim: int,
        activations: Union[str, Sequence[str]] = "relu",
        direction: str = "generative",
        amortized: bool = False,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if len(dims) < 2:
            raise ConfigError(
                f"dims={dims} needs at least two sizes (input and one latent layer), "
                "e.g. --model.dims '[784, 256, 10]'"
            )
        if any(d <= 0 for d in dims) or output_dim <= 0:
            raise ConfigError(f"every size must be positive; got dims={dims}, output_dim={output_dim}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
        self.dims = dims
        self.output_dim = int(output_dim)
        self.direction = direction
        self.activation_names = resolve_activations(activations, len(dims) - 1)
        self.acts: list[Activation] = [get_activation(n) for n in self.activation_names]
        shapes = [
            (dims[l], dims[l + 1]) if direction == "generative" else (dims[l + 1], dims[l])
            for l in range(len(dims) - 1)
        ]
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(s)) for s in shapes])
        self.readout = nn.Parameter(torch.empty(self.output_dim, dims[-1]))
        # Amortized (hybrid) inference, generative only: bottom-up V(l) of shape
        # (dims[l+1], dims[l]); g(l) is ReLU below the top and linear for the top.
        if amortized and direction != "generative":
            raise ConfigError("amortized=True needs direction='generative' (the discriminative sweep is already exact)")
        self.amortized = amortized
        self.amort = nn.ParameterList(
            [nn.Parameter(torch.empty(dims[l + 1], dims[l])) for l in range(len(dims) - 1)] if amortized else []
        )
        self.amort_acts = [get_activation("relu")] * (len(dims) - 2) + [get_activation("linear")] if amortized else []
        self.reset_parameters()

    @property
    def n_layers(self) -> int:
        """Number of weight matrices L (the readout not counted)."""
        return len(self.dims) - 1

    @property
    def generative(self) -> bool:
        return self.direction == "generative"

    def reset_parameters(self) -> None:
        for W in self.weights:
            nn.init.xavier_uniform_(W)
        nn.init.xavier_uniform_(self.readout)
        for V in self.amort:
            nn.init.xavier_uniform_(V)

    def parameters_in_update_order(self) -> list[nn.Parameter]:
        """W(0), ..., W(L-1), R: the order of per-layer learning rates (then V, if amortized)."""
        return list(self.weights) + [self.readout] + list(self.amort)

    # ----------------------------------------------------------------- chain view
    def chain(self) -> tuple[list[Tensor], list[Activation], Optional[Tensor]]:
        """The network as the bottom-first chain the equations work on.

        Returns (weights, activations, readout): chain weight k predicts chain
        layer k from layer k+1. The tensors are the parameters themselves, so a
        gradient computed for chain weight k belongs to that parameter.
        """
        if self.generative:
            return list(self.weights), list(self.acts), self.readout
        linear = get_activation("linear")
        return [self.readout] + list(self.weights)[::-1], [linear] + self.acts[::-1], None

    def chain_parameters(self) -> list[nn.Parameter]:
        """Parameters in the order `weight_gradients` returns their gradients."""
        weights, _, readout = self.chain()
        return weights + ([readout] if readout is not None else [])

    # ---------------------------------------------------------------- latents
    def feedforward(self, x: Tensor) -> list[Tensor]:
        """Discriminative sweep: [x, f(0)(W(0) x), ..., top hidden, logits]."""
        if self.generative:
            raise ConfigError(
                "latent_init='feedforward' needs direction='discriminative': the "
                "generative model has no bottom-up pass; use 'random' or 'zeros'"
            )
        out = [x]
        for W, f in zip(self.weights, self.acts):
            out.append(f.f(out[-1] @ W.T))
        out.append(out[-1] @ self.readout.T)
        return out

    def init_latents(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: str = "random",
        std: float = 0.1,
        generator: Optional[torch.Generator] = None,
    ) -> list[Tensor]:
        """Free latents x(1..L) of the generative model, input side first."""
        if mode not in ("random", "zeros"):
            raise ConfigError(
                f"latent_init={mode!r} is not available for the generative model; "
                "use 'random' or 'zeros'"
            )
        latents = []
        for d in self.dims[1:]:
            if mode == "zeros":
                latents.append(torch.zeros(batch_size, d, device=device, dtype=dtype))
            else:
                z = torch.randn(batch_size, d, generator=generator, dtype=dtype)
                latents.append(z.mul_(std).to(device))
        return latents

    def initial_state(
        self,
        x: Tensor,
        y: Optional[Tensor],
        mode: str = "random",
        std: float = 0.1,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[list[Tensor], list[bool]]:
        """Chain latents (bottom first) and which of them are free to settle.

        Generative: [x, x(1), ..., x(L)], x clamped. The label, if any, enters only
        through the readout term, never as a latent.
        Discriminative: [y, hidden L, ..., hidden 1, x] with x and y clamped (y is
        required: at test the prediction is the sweep itself, see `PCNModule.predict_logits`).
        """
        if self.generative:
            if mode == "amortized":
                if not self.amortized:
                    raise ConfigError("latent_init='amortized' needs amortized=True")
                from pcn_lightning.equations import amortized_sweep

                latents = amortized_sweep(x, self.amort, self.amort_acts)
            else:
                latents = self.init_latents(x.shape[0], x.device, x.dtype, mode, std, generator)
            xs = [x] + latents
            return xs, [False] + [True] * len(latents)
        if y is None:
            raise ValueError("the discriminative chain settles only with the label clamped")
        if mode == "feedforward":
            hidden = [h.clone() for h in self.feedforward(x)[1:-1]]
        else:
            hidden = self.init_latents(x.shape[0], x.device, x.dtype, mode, std, generator)
        xs = [y] + hidden[::-1] + [x]
        return xs, [False] + [True] * len(hidden) + [False]

    def top_latent(self, xs: Sequence[Tensor]) -> Tensor:
        """The latent the readout reads (x(L) generative, top hidden discriminative)."""
        return xs[-1] if self.generative else xs[1]
