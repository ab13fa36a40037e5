"""The shipped configs train through train.py on small fixtures (no real dataset), and the prepared GPU script runs its path on the CPU."""


import math
import sys

import pytest
import torch

import numpy as np

from pcn_lightning import cli
from pcn_lightning import image_folder as imf
from pcn_lightning.data import CIFAR10_CLASSES, PCNDataModule
from tests.conftest import REPO, SHAKESPEARE_TEXT as TEXT, make_cifar, make_cifar_folder, write_image_folder

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


def test_gpu_script_runs_its_path_on_the_cpu(tmp_path, monkeypatch, capsys):
    """The prepared GPU run, on the CPU: CIFAR-100 from an image folder (the PNG copies' layout).
    Its two train.py command lines (PC and twin) run through train.py's `main` in this
    interpreter (a fresh interpreter is what test_train_py's smoke run proves)."""
    import subprocess

    from benchmarks import gpu_cifar
    from pcn_lightning.data import CIFAR100_CLASSES
    root = write_image_folder(tmp_path / "cifar100", classes=CIFAR100_CLASSES, n=(1, 1), size=(32, 32))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(tmp_path))  # the decode cache

    def train_py_here(cmd, cwd, **_):
        assert cmd[:2] == [sys.executable, str(REPO / "train.py")], cmd
        with monkeypatch.context() as m:
            m.chdir(cwd)
            rc = cli.main(cmd[2:])
        return subprocess.CompletedProcess(cmd, rc, "", "")

    monkeypatch.setattr(gpu_cifar.subprocess, "run", train_py_here)
    gpu_cifar.main(["--dataset", "cifar100", "--data_dir", str(root), "--device", "cpu", "--epochs", "1",
                    "--max_batches", "1", "--batch", "4", "--pc_extra=--model.T_infer 1"])
    out = capsys.readouterr().out
    assert "PC / BP epoch time" in out and "| PCN |" in out and "| backprop twin |" in out
    assert "cifar100" in out


def test_sixteen_layer_residual_pcn_trains_through_train_py(tmp_path, monkeypatch, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    layers = ("[{flatten: {}, dense: {units: 32}}, {dense: {units: 32, pre_activation: relu}, skip: true, repeat: 15}, "
              "{dense: {pre_activation: relu}}]")
    rc = cli.main(["--config", str(REPO / "configs/fashion_mnist_deep.yaml"), "--data.data_dir", str(fmnist_session_dir),
                   "--model.layers", layers, "--model.T_infer", "16", "--data.val_size", "64", "--data.batch_size", "32",
                   "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
                   "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"])
    assert rc == 0
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert ckpt["global_step"] == 3
    assert sum(k.endswith("map.inner.weight") for k in ckpt["state_dict"]) == 15  # the residual layers


def test_image_folder_trains_through_train_py(tmp_path, monkeypatch, capsys):
    """dataset image_folder: shape, classes and normalization from the data; a few batches, then test."""
    root = write_image_folder(tmp_path / "d", n=(40, 6), size=(8, 8))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.dataset", "image_folder",
                   "--data.data_dir", str(root), "--data.val_size", "12", "--data.batch_size", "16",
                   "--data.normalize", "true", "--model.init_args.dims", "[192, 32, 3]",
                   "--trainer.enable_progress_bar", "false"])
    assert rc == 0, capsys.readouterr().err
    from benchmarks.run_report import report

    row = report(tmp_path / "logs")  # what benchmarks/CIFAR.md's rows are read with
    assert row["model"] == "PCNModule" and row["epochs"] == 0 and len(row["val_top1"]) == 1
    assert 0 <= row["test_top1"] <= 1 and row["test_top5"] is None  # top-5 from ten classes on
    dm = PCNDataModule("image_folder", str(root), batch_size=16, val_size=12)
    assert dm.num_classes == 3 and dm.image_shape == (3, 8, 8)
    assert np.allclose(dm.mean, imf.load_image_folder(root).mean_std()[0])


@pytest.mark.parametrize("config", ["cifar10_small", "cifar100_small", "cifar10_pc", "cifar100_pc"])
def test_shipped_cifar_configs_train_on_an_image_folder(config, tmp_path, monkeypatch, capsys):
    """Each CIFAR config trains a few batches of an image folder through train.py; the
    settled ones (`*_pc`) log SettleCheck's regime, read back from TensorBoard: the
    energy's relative drop, each term's cosine to backprop's gradient, the latents'
    displacement from the feedforward state and the settle curve; no logged scalar is NaN."""
    from pcn_lightning.data import CIFAR100_CLASSES

    classes = CIFAR10_CLASSES if config.startswith("cifar10_") else CIFAR100_CLASSES
    root = make_cifar_folder(tmp_path / "cifar", classes, n=(4 if len(classes) == 10 else 1, 1))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / f"configs/{config}.yaml"), "--data.data_dir", str(root),
                   "--data.val_size", "10", "--data.batch_size", "8", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
                   "--trainer.enable_model_summary", "false"])
    assert rc == 0, capsys.readouterr().err
    assert list(tmp_path.rglob("best-*.ckpt"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in scalars:
        assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    if config.endswith("_pc"):
        terms = ["layer1", "layer2", "layer3", "layer4", "readout"]
        assert {"settle/rel_drop", "settle/bp_cosine_min", "settle/displacement_max"} <= scalars
        assert {f"settle/bp_cosine_{t}" for t in terms} <= scalars, scalars
        assert "settle/energy_curve" in events.Tags()["images"]
        assert -1 <= events.Scalars("settle/bp_cosine_min")[0].value <= 1
        assert events.Scalars("settle/displacement_max")[0].value > 0  # inference moved the latents
    else:  # one sweep, errors on arrival: nothing settles, nothing to check
        assert not any(t.startswith("settle/") for t in scalars)


@pytest.mark.parametrize("model", ["pcn_lightning.TemporalPCNModule", "pcn_lightning.TemporalTwin"])
def test_trains_through_train_py_and_samples(model, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(REPO / "configs/shakespeare_char.yaml"), "--data.data_dir", str(corpus.parent),
            "--data.batch_size", "4", "--data.seq_len", "16", "--trainer.max_epochs", "2",
            "--trainer.val_check_interval", "1.0", "--trainer.enable_progress_bar", "false",
            "--model.class_path", model, "--model.hidden", "16"]
    assert cli.main(args) == 0
    ckpt = next(tmp_path.rglob("best-*.ckpt"))
    from pcn_lightning import sample
    capsys.readouterr()
    assert sample.main(["--ckpt", str(ckpt), "--prompt", "All:", "--chars", "40", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("All:") and len(out.rstrip("\n")) >= 40
    assert set(out.rstrip("\n")) <= set(TEXT)


@pytest.mark.parametrize("model", ["pcn_lightning.TransformerPCNModule", "pcn_lightning.TransformerTwin"])
def test_transformer_config_trains_through_train_py_and_samples(model, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    layers = ('[{token_dense: {units: 8}, position: {}}, {transformer_block: {heads: 2, mlp_ratio: 2}}, '
              '{rmsnorm: {}, token_dense: {}}]')
    args = ["--config", str(REPO / "configs/shakespeare_transformer.yaml"), "--data.data_dir", str(corpus.parent),
            "--data.batch_size", "4", "--data.seq_len", "16", "--model.context", "16", "--model.layers", layers,
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.val_check_interval", "1.0",
            "--trainer.enable_progress_bar", "false", "--model.class_path", model]
    assert cli.main(args) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert "attention/block0_head0" in events.Tags()["images"]  # the attention map, one head
    assert "val/bits_per_char" in events.Tags()["scalars"]
    if model.endswith("PCNModule"):  # each block's energy
        assert {"train/energy_layer1", "train/energy_layer2", "train/energy_readout"} <= set(events.Tags()["scalars"])
    ckpt = next(tmp_path.rglob("best-*.ckpt"))
    from pcn_lightning import sample
    capsys.readouterr()
    assert sample.main(["--ckpt", str(ckpt), "--prompt", "All:", "--chars", "20", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("All:") and set(out.rstrip("\n")) <= set(TEXT)
