"""`PCNModule.export()`: the label-free predictor as a plain torch module that equals the
PCN's predictions and runs, saved and loaded, without this package importable."""

import subprocess
import sys

import pytest
import torch

from pcn_lightning import NetworkSpec, PCNModule
from pcn_lightning.errors import ConfigError

CONV = [{"conv": {"channels": 4, "kernel": 3, "padding": 1}, "act": "gelu", "maxpool": 2},
        {"conv": {"channels": 6, "kernel": 3, "padding": 1}, "act": "relu", "maxpool": 2},
        {"flatten": {}, "dense": {"bias": True}}]


@pytest.mark.parametrize("label_energy", ["gaussian", "categorical"])
def test_exported_predictor_equals_the_pcns_label_free_predictions(label_energy, tmp_path):
    torch.manual_seed(0)
    m = PCNModule(NetworkSpec(direction="discriminative", layers=CONV, label_energy=label_energy),
                  input_shape=[3, 8, 8], output_dim=5)
    predictor = m.export()
    x = torch.randn(7, 3, 8, 8)  # another batch size than the export's example
    assert isinstance(predictor, torch.nn.Module)
    assert (predictor(x) - m.predict_logits(x)).abs().max().item() <= 1e-6
    # saved with torch.export, loaded where pcn_lightning cannot be imported
    path = tmp_path / "predictor.pt2"
    torch.export.save(torch.export.export(predictor, (x,)), str(path))
    torch.save({"x": x, "y": m.predict_logits(x)}, tmp_path / "ref.pt")
    script = (
        "import sys; sys.modules['pcn_lightning'] = None\n"  # any import of it fails
        "import torch\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r})\n"
        f"module = torch.export.load({str(path)!r}).module()\n"
        "print((module(ref['x']) - ref['y']).abs().max().item())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) <= 1e-6


def test_a_generative_network_is_not_exported_as_a_feedforward_pass():
    m = PCNModule(NetworkSpec(direction="generative", dims=[12, 8, 6]), input_shape=[12], output_dim=3)
    with pytest.raises(ConfigError, match="export needs a discriminative network"):
        m.export()
