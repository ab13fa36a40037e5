"""Adding a primitive needs one class and its registration, nothing else: a
trivial one (an elementwise scale with a learned vector) defined here is checked
by the generic autograd test (tests/unit/test_primitives.py runs every registered
primitive) and trains through the real entry point without touching the module."""

from typing import Any

import torch
from torch import nn

from pcn_lightning import Map, cli, register
from tests.conftest import REPO


@register("elementwise_scale")
class ElementwiseScale(Map):
    """a = s * x, with one learned s per unit: transpose(h) = s * h, dE/ds = -sum_batch h * x."""

    def __init__(self, in_shape, init: float = 1.0) -> None:
        super().__init__(in_shape)
        self.s = nn.Parameter(torch.full(self.in_shape, float(init)))

    @property
    def out_shape(self):
        return self.in_shape

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return self.s * x, x

    def transpose(self, h: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.s * h

    def weight_grads(self, h: torch.Tensor, ctx: Any) -> list[torch.Tensor]:
        return [-(h * ctx).sum(0)]

    @classmethod
    def example(cls) -> "ElementwiseScale":
        m = cls((6,))
        with torch.no_grad():
            m.s.copy_(torch.linspace(-1, 2, 6))
        return m


def test_a_new_primitive_trains_through_train_py(tmp_path, monkeypatch, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    layers = "[{flatten: {}, dense: {units: 32}, activation: relu}, {elementwise_scale: {init: 0.5}, activation: tanh}, {dense: {}}]"
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.data_dir", str(fmnist_session_dir),
                   "--trainer.enable_progress_bar", "false", "--model.direction", "discriminative",
                   "--model.dims", "null", "--model.layers", layers, "--model.latent_init", "feedforward",
                   "--model.eta_learn", "0.01"])
    assert rc == 0
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    s = ckpt["state_dict"]["net.terms.1.map.s"]
    assert s.shape == (32,) and not torch.allclose(s, torch.full((32,), 0.5))  # it learned
