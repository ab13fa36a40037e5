"""Convolutional PCNs end to end: the shipped conv configs train through train.py
(Fashion-MNIST on a fixture; the CIFAR VGG-5 configs on tiny CIFAR-format
fixtures), the prepared GPU script runs its path on the CPU, and a conv network's
label-free evaluation is the feedforward sweep."""

import os
import subprocess
import sys

import pytest
import torch

from pcn_lightning import PCNModule, cli
from tests.conftest import REPO, make_cifar, write_image_folder
from tests.test_cli import run_train

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"]


def test_fashion_mnist_conv_config_trains(tmp_path, monkeypatch, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / "configs/fashion_mnist_conv.yaml"), "--data.data_dir", str(fmnist_session_dir),
                   "--data.val_size", "64", "--data.batch_size", "32", *TINY])
    assert rc == 0
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert ckpt["state_dict"]["net.terms.0.map.maps.0.weight"].shape == (32, 1, 3, 3)
    assert ckpt["global_step"] == 2


@pytest.mark.parametrize("config,name", [("cifar10_vgg5", "cifar10"), ("cifar100_vgg5", "cifar100")])
def test_cifar_vgg5_configs_train_on_fixtures(config, name, tmp_path, monkeypatch):
    root = make_cifar(tmp_path / "data", name, n_per_file=24)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / f"configs/{config}.yaml"), "--data.data_dir", str(root), "--data.download", "false",
                   "--data.val_size", "8", "--data.batch_size", "8", *TINY])
    assert rc == 0
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert shapes["net.terms.3.map.maps.0.weight"] == (512, 512, 3, 3)
    assert shapes["net.terms.4.map.maps.1.weight"] == ((10 if name == "cifar10" else 100), 2048)


def test_main_configs_are_the_vgg5_recipe():
    for ds in ("cifar10", "cifar100"):
        assert (REPO / f"configs/{ds}.yaml").resolve() == (REPO / f"configs/{ds}_vgg5.yaml").resolve()


def test_gpu_script_runs_its_path_on_the_cpu(tmp_path):
    """The prepared GPU run, on the CPU: CIFAR-100 from an image folder (the PNG copies' layout)."""
    from pcn_lightning.data import CIFAR100_CLASSES
    root = write_image_folder(tmp_path / "cifar100", classes=CIFAR100_CLASSES, n=(1, 1), size=(32, 32))
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_cifar", "--dataset", "cifar100", "--data_dir", str(root),
                        "--device", "cpu", "--epochs", "1", "--max_batches", "1", "--batch", "4",
                        "--pc_extra=--model.T_infer 1"],
                       cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "PC / BP epoch time" in r.stdout and "| PCN |" in r.stdout and "| backprop twin |" in r.stdout
    assert "cifar100" in r.stdout


def test_label_free_conv_prediction_is_the_feedforward_sweep():
    torch.manual_seed(0)
    m = PCNModule.from_flat(direction="discriminative", layers=[
        {"conv": {"channels": 4, "kernel": 3, "padding": 1}, "maxpool": 2, "activation": "relu"},
        {"conv": {"channels": 6, "kernel": 3, "stride": 2}, "activation": "tanh"},
        {"flatten": {}, "dense": {"units": 12}, "activation": "relu"},
        {"dense": {}},
    ], input_shape=[1, 12, 12], output_dim=5, latent_init="feedforward", T_infer=5)
    x = torch.rand(3, 144)
    from pcn_lightning.builders import twin_forward
    assert torch.equal(m.predict_logits(x), twin_forward(m.net, x))
    assert m.predict_logits(x).shape == (3, 5)
