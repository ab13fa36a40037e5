"""Reliability: exact resume, determinism, the divergence guard, clear errors."""

import torch

from tests.conftest import REPO

TINY = [
    "--config", str(REPO / "configs/smoke.yaml"),
    "--trainer.limit_train_batches", "null", "--trainer.limit_val_batches", "2",
    "--trainer.enable_progress_bar", "false", "--test", "false",
    "--data.val_size", "88", "--data.batch_size", "64",  # 512 training samples: 8 batches an epoch
    "--model.init_args.latent_init", "random", "--model.init_args.optimizer", "adam",
    "--model.init_args.lr_scheduler", "cosine",
]


def final_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["state_dict"], ckpt


def test_resume_mid_epoch_is_bitwise_exact(tmp_path, fmnist_session_dir, train):
    every = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
             "--trainer.callbacks.every_n_train_steps", "5", "--trainer.callbacks.save_top_k", "-1",
             "--trainer.callbacks.dirpath", str(tmp_path / "steps"), "--trainer.callbacks.filename", "{step}"]
    args = TINY + ["--data.data_dir", str(fmnist_session_dir), "--trainer.max_epochs", "3"]
    r = train(args + every, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    full, _ = final_state(tmp_path / "logs/smoke/version_0")
    mid = tmp_path / "steps" / "step=10.ckpt"  # epoch 1, batch 2 of 8: mid-epoch
    assert mid.exists(), sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert torch.load(mid, weights_only=False)["epoch"] == 1
    r2 = train(args + ["--ckpt_path", str(mid)], tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    resumed, ckpt = final_state(tmp_path / "logs/smoke/version_1")
    assert ckpt["global_step"] == 24
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_same_seed_same_weights(tmp_path, fmnist_session_dir, train):
    args = TINY + ["--data.data_dir", str(fmnist_session_dir), "--trainer.max_epochs", "1"]
    assert train(args, tmp_path).returncode == 0
    assert train(args, tmp_path).returncode == 0
    a, _ = final_state(tmp_path / "logs/smoke/version_0")
    b, _ = final_state(tmp_path / "logs/smoke/version_1")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train(args + ["--seed_everything", "1", "--model.init_args.seed", "1"], tmp_path).returncode == 0
    c, _ = final_state(tmp_path / "logs/smoke/version_2")
    assert not all(torch.equal(a[k], c[k]) for k in a)
