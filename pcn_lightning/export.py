"""A trained discriminative PCN as a plain PyTorch predictor.

With its label free, a discriminative PCN's inference is exact in one feedforward
sweep (every node a leaf in turn: `network.PCNetwork.active_terms`), so its label-free
predictions are a feedforward network's. `export_predictor` traces that sweep with
`torch.export` into a `torch.fx.GraphModule` of ATen operations holding copies of the
weights: it runs, saves (`torch.export.save(torch.export.export(m, (x,)), path)`) and
loads with torch alone, without this package importable, and returns what
`PCNModule.predict_logits` returns (the label node's values: the squared-error label's
scores, or the categorical label's probabilities).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pcn_lightning.builders import twin_forward
from pcn_lightning.errors import ConfigError


class _Sweep(nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return twin_forward(self.net, x)


def export_predictor(module, example: Optional[torch.Tensor] = None) -> nn.Module:
    """The label-free predictor of `module` (a `PCNModule`) as a GraphModule of torch ops,
    any batch size; `example`: one input batch (a zero batch of the data's shape by default)."""
    net = module.net
    if net.direction != "discriminative" or getattr(module, "eval_mode", "readout") != "readout":
        raise ConfigError("export needs a discriminative network read out by one sweep (direction 'discriminative', "
                          "eval_mode 'readout'): a generative network's label-free inference is a settle, not a "
                          "feedforward pass")
    weight = next(net.parameters())
    if example is None:
        example = torch.zeros(2, *net.input_shape, dtype=weight.dtype, device=weight.device)
    example = net.checked_input(example)
    batch = torch.export.Dim("batch", min=1)
    sweep = _Sweep(net).eval()
    with torch.no_grad():
        program = torch.export.export(sweep, (example,), dynamic_shapes=({0: batch},))
    predictor = program.module()
    for p in predictor.parameters():
        p.requires_grad_(False)
    return predictor
