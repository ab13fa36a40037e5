"""DDP on CPU (gloo, 2 processes): the all-reduced Hebbian updates keep the replicas
identical and equal to one process trained on the same global batches."""

import subprocess

import pytest
import torch

from tests.conftest import REPO, run_train

pytestmark = pytest.mark.xdist_group("ddp")  # one worker runs every DDP launch, one after another

BASE = [
    "--config", str(REPO / "configs/smoke.yaml"),
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
    "--data.val_size", "88", "--test", "false",
]

# the generative MLP by SGD with momentum, and a discriminative conv net by Adam: between them
# every path the all-reduce serves (the rules, the optimizers, the sweep; MLP or conv maps
# change none of it)
SETUPS = {
    "sgd_generative": ["--model.init_args.optimizer", "sgd", "--model.init_args.momentum", "0.9",
                       "--model.init_args.latent_init", "zeros",
                       "--model.init_args.eta_learn", "[0.01, 0.02, 0.03]"],
    "adam_conv": ["--model.optimizer", "adam", "--model.direction", "discriminative", "--model.dims", "null",
                  "--model.layers", "[{conv: {channels: 4, kernel: 3, padding: 1}, maxpool: 2, activation: relu}, "
                                    "{flatten: {}, dense: {}}]",
                  "--model.latent_init", "feedforward", "--model.eta_learn", "0.002"],
}


def train_params(tmp_path, data_dir, setup, devices, tag, train=None):
    """The parameters every rank ends with; DDP runs in worker processes as a user's,
    one process in this interpreter (`train`) when given."""
    dump = tmp_path / tag
    per_device = 16 if devices == 2 else 32
    args = BASE + SETUPS[setup] + [
        "--data.data_dir", str(data_dir), "--data.batch_size", str(per_device),
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.callbacks+=callbacks.replica_check.ReplicaCheck",
        "--trainer.callbacks.dump_dir", str(dump),
    ]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    r = train(args, tmp_path) if train is not None else run_train(args, tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    leftover = subprocess.run(["pgrep", "-f", str(dump)], capture_output=True, text=True).stdout.strip()
    assert not leftover, f"processes left running: {leftover}"
    return [torch.load(dump / f"params_rank{r}.pt") for r in range(devices)]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_ddp_matches_one_process(tmp_path, fmnist_session_dir, setup, train):
    single = train_params(tmp_path, fmnist_session_dir, setup, 1, "single", train)[0]
    rank0, rank1 = train_params(tmp_path, fmnist_session_dir, setup, 2, "ddp")
    assert rank0.keys() == single.keys()
    for k in single:
        assert torch.equal(rank0[k], rank1[k]), f"{k} differs between ranks"
        assert rel(rank0[k], single[k]) < 1e-5, f"{k}: DDP vs one process {rel(rank0[k], single[k]):.2e}"

