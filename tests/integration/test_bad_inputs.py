"""Every bad input gets one clear error through the real entry point, before any
training work, and nothing is written or overwritten."""

import hashlib

import pytest
import torch

from pcn_lightning import cli
from pcn_lightning import data as data_mod, readers
from tests.conftest import REPO

SMOKE = str(REPO / "configs/smoke.yaml")

# (id, extra arguments, a fragment the message must contain)
CASES = [
    ("one_dim", ["--model.init_args.dims", "[784]"], "at least two sizes"),
    ("dims0_vs_data", ["--model.init_args.dims", "[100, 32, 10]"], "dims[0]=100 but the data has 784"),
    ("output_dim_given", ["--model.init_args.output_dim", "5"], "output_dim is set from the data"),
    ("input_dim_given", ["--model.init_args.input_dim", "100"], "input_dim is set from the data"),
    ("unknown_activation", ["--model.init_args.activations", "[linear, swish]"], "unknown activation 'swish'"),
    ("activations_length", ["--model.init_args.activations", "[linear, relu, relu]"], "activations has 3 entries"),
    ("eta_learn_length", ["--model.init_args.eta_learn", "[0.1, 0.1]"], "eta_learn has 2 entries"),
    ("eta_infer_zero", ["--model.init_args.eta_infer", "0"], "eta_infer must be a positive number"),
    ("eta_learn_negative", ["--model.init_args.eta_learn", "-0.01"], "eta_learn must be a positive number"),
    ("T_infer_zero", ["--model.init_args.T_infer", "0"], "T_infer must be a positive integer"),
    ("T_infer_float", ["--model.init_args.T_infer", "2.5"], "Expected a <class 'int'>"),
    ("t_learn_zero", ["--model.init_args.t_learn", "0"], "t_learn must be a positive integer"),
    ("unknown_direction", ["--model.init_args.direction", "sideways"], "unknown direction"),
    ("unknown_optimizer", ["--model.init_args.optimizer", "lbfgs"], "unknown optimizer"),
    ("feedforward_generative", ["--model.init_args.latent_init", "feedforward"], "needs direction='discriminative'"),
    ("batch_too_large", ["--data.batch_size", "100000"], "lower --data.batch_size"),
    ("unknown_dataset", ["--data.dataset", "mnist"], "unknown dataset 'mnist'"),
    ("val_fraction", ["--data.val_size", "1.5"], "val_size as a fraction"),
    ("dataset_missing", ["--data.data_dir", "{missing}"], "apt-get install dataset-fashion-mnist"),
    ("cifar_missing_offline", ["--data.dataset", "cifar10", "--model.init_args.dims", "[3072, 32, 10]",
                               "--data.download", "false", "--data.data_dir", "{missing}"], "--data.data_dir"),
    ("mixed_precision", ["--trainer.precision", "16-mixed"], "unscale the hand-set Hebbian gradients"),
    ("gradient_clip", ["--trainer.gradient_clip_val", "1.0"], "grad_clip_norm"),
    ("checkpoint_missing", ["--ckpt_path", "{missing}/x.ckpt"], "no such file"),
    ("checkpoint_other_architecture", ["--ckpt_path", "{other_ckpt}"], "another architecture"),
    ("unknown_readout_learning", ["--model.init_args.readout_learning", "free"], "unknown readout_learning 'free'"),
    ("unknown_option", ["--model.init_args.T_inference", "5"], "T_inference"),
]


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory):
    """A checkpoint of a different architecture (a 64-unit latent layer)."""
    from pcn_lightning import PCNModule
    m = PCNModule.from_flat(dims=[784, 64, 10], output_dim=10)
    path = tmp_path_factory.mktemp("ckpt") / "other.ckpt"
    torch.save({"state_dict": m.state_dict()}, path)
    return path


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_clear_message(case, tmp_path, monkeypatch, capsys, fmnist_session_dir, other_ckpt):
    name, extra, fragment = case
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-dir"
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", missing)
    # a good run's checkpoint, which must survive untouched
    good = tmp_path / "logs" / "smoke" / "version_0" / "checkpoints"
    good.mkdir(parents=True)
    (good / "last.ckpt").write_bytes(b"a good checkpoint")
    before = digest(tmp_path)
    extra = [a.format(missing=missing, other_ckpt=other_ckpt) for a in extra]
    data_dir = [] if "--data.data_dir" in extra else ["--data.data_dir", str(fmnist_session_dir)]
    rc = cli.main(["--config", SMOKE, "--trainer.enable_progress_bar", "false"] + data_dir + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err
    assert "Traceback" not in err
    error_lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1, err
    assert digest(tmp_path) == before  # nothing written, nothing overwritten


def test_nan_in_input_data(tmp_path, monkeypatch, capsys, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    real = data_mod.to_image_tensor

    def with_nan(*a, **k):
        x = real(*a, **k)
        x.view(x.shape[0], -1)[3, 7] = float("nan")
        return x

    monkeypatch.setattr(data_mod, "to_image_tensor", with_nan)
    rc = cli.main(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "NaN or inf" in err
    assert not list(tmp_path.rglob("*.ckpt"))


def test_divergence_stops_and_keeps_the_good_checkpoint(tmp_path, monkeypatch, capsys, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    base = ["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), "--trainer.enable_progress_bar", "false",
            "--test", "false"]
    assert cli.main(base) == 0
    good = tmp_path / "logs" / "smoke" / "version_0" / "checkpoints"
    before = digest(good)
    assert any(p.name.startswith("best-") for p in good.iterdir())
    # resume the good run with an inference step size that explodes
    rc = cli.main(base + ["--ckpt_path", str(good / "last.ckpt"), "--trainer.max_epochs", "2",
                          "--model.init_args.eta_infer", "50"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "diverged" in err and "layer" in err and "step 2" in err and "eta_infer" in err
    assert digest(good) == before
    assert not list((tmp_path / "logs" / "smoke" / "version_1").rglob("*.ckpt"))
