"""`python train.py --config ...` end to end, as a user runs it."""

import pytest
import torch
import yaml

from pcn_lightning import NetworkSpec, build_network
from pcn_lightning.data import input_dim_of, input_shape_of, num_classes_of
from tests.conftest import REPO, run_train

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "base.yaml")


def test_smoke_fit_then_test_with_overrides(tmp_path, fmnist_session_dir):
    r = run_train([
        "--config", str(REPO / "configs/smoke.yaml"),
        "--data.data_dir", str(fmnist_session_dir), "--data.val_size", "64",
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
        "--model.init_args.T_infer", "7",
    ], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test/acc_top1" in r.stdout
    run = tmp_path / "logs" / "smoke" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["inference"]["T_infer"] == 7
    assert saved["trainer"]["max_epochs"] == 2
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert list(run.glob("events.out.tfevents.*"))
    hp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
    assert (hp["input_shape"], hp["output_dim"]) == ([1, 28, 28], 10)  # linked from the data


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_print_config_parses_and_dims_match_data(config, tmp_path, train):
    r = train(["--config", str(config), "--print_config"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load(r.stdout)
    if "network" not in cfg["model"]["init_args"]:  # the language model: its own shape
        assert cfg["data"]["class_path"].endswith("ShakespeareCharDataModule")
        return
    network = cfg["model"]["init_args"]["network"]
    dataset = cfg["data"]["init_args"]["dataset"]
    if network["dims"] is not None:
        assert network["dims"][0] == input_dim_of(dataset)
    # the description builds for the data's shape and classes
    net = build_network(NetworkSpec(**network), input_shape_of(dataset), num_classes_of(dataset))
    assert net.input_shape in (tuple(input_shape_of(dataset)), (input_dim_of(dataset),))
    assert not (tmp_path / "logs").exists()  # printing writes nothing


def test_backprop_twin_from_the_same_config(tmp_path, fmnist_session_dir, train):
    r = train([
        "--config", str(REPO / "configs/smoke.yaml"), "--data.data_dir", str(fmnist_session_dir),
        "--data.val_size", "64", "--model.class_path", "pcn_lightning.BackpropTwin",
        "--trainer.enable_progress_bar", "false",
    ], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test/acc_top1" in r.stdout


def test_a_run_with_flat_flags_prints_no_lightning_noise(tmp_path, fmnist_session_dir):
    """A user's run with a flat flag (`--model.eta_learn`): no LightningCLI warning about
    `args` (train.py passes its own command line, expanded) and no litlogger advertisement.
    Python's warnings are on, as a user's are."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/fashion_mnist.yaml"),
                           "--model.eta_learn", "0.002", "--data.data_dir", str(fmnist_session_dir), "--data.val_size", "100",
                           "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--test", "false",
                           "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "args parameter is intended" not in out
    assert "litlogger" not in out
