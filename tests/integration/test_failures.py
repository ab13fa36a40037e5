"""Reliability, round 2: no run ends green on wrong data, a diverged model or a
silent fallback. Each class of failure through the real entry point: the exit
code, the single `error:` line, and nothing earlier changed."""

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pcn_lightning import PCNModule, cli
from pcn_lightning import readers
from tests.conftest import REPO, communicate_or_kill, make_fashion_mnist, write_idx

SMOKE = str(REPO / "configs/smoke.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """cli.main in a fresh folder holding a good run's checkpoint, which must survive."""
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "logs" / "smoke" / "version_0" / "checkpoints"
    good.mkdir(parents=True)
    (good / "last.ckpt").write_bytes(b"a good checkpoint")

    def call(args, code):
        before = digest(good)
        rc = cli.main(args)
        err = capsys.readouterr().err
        assert rc == code, err[-3000:]
        assert digest(good) == before
        if code:
            assert len([l for l in err.splitlines() if l.startswith("error:")]) == 1, err
            assert "Traceback" not in err
        return err
    return call


# 1. a diverging settle
def test_diverging_inference_stops_the_run_at_once(run, tmp_path, fmnist_session_dir):
    err = run(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET,
               "--model.eta_infer", "5", "--trainer.max_epochs", "3"], 1)
    assert "diverged" in err and "eta_infer" in err and "step 0" in err
    assert not list((tmp_path / "logs" / "smoke").glob("version_1/checkpoints/*.ckpt"))


def test_settle_check_calls_a_rising_energy_diverging():
    from callbacks.settle_check import settle_report

    rising = torch.logspace(0, 6, 26).unsqueeze(1)
    r = settle_report(rising, 0.01)
    assert r.diverging and not r.settled and r.rel_drop < 0
    assert "diverging" in r.message(0.01, 25, 5.0) and "Lower eta_infer" in r.message(0.01, 25, 5.0)
    nan = torch.tensor([[1.0], [float("nan")]])
    assert settle_report(nan, 0.01).diverging and not settle_report(nan, 0.01).settled


# 2. a data_dir that cannot be used is never silently replaced
@pytest.mark.parametrize("case", ["missing", "empty", "file", "one_file_missing"])
def test_unusable_data_dir_is_an_error(case, run, tmp_path, monkeypatch, fmnist_session_dir):
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", fmnist_session_dir)  # a good fallback exists
    bad = tmp_path / "bad"
    if case == "empty":
        bad.mkdir()
    elif case == "file":
        bad.write_text("not a folder")
    elif case == "one_file_missing":
        make_fashion_mnist(bad, n_train=64, n_test=32)
        (bad / "t10k-labels-idx1-ubyte.gz").unlink()
    err = run(["--config", SMOKE, "--data.data_dir", str(bad), *QUIET], 2)
    assert str(bad) in err
    expected = {"missing": "does not exist", "empty": "lacks", "file": "is a file",
                "one_file_missing": "lacks t10k-labels-idx1-ubyte"}[case]
    assert expected in err


# 3. corrupt data is found before training, named in one line
@pytest.mark.parametrize("case", ["test_images_truncated_gz", "train_images_truncated_raw", "labels_mismatch"])
def test_corrupt_data_is_found_before_training(case, run, tmp_path):
    folder = make_fashion_mnist(tmp_path / "fm", n_train=600, n_test=200)
    if case == "test_images_truncated_gz":
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif case == "train_images_truncated_raw":
        gz = folder / "train-images-idx3-ubyte.gz"
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(gzip.decompress(gz.read_bytes())[:-1000])
        gz.unlink()
    else:
        path = folder / "train-labels-idx1-ubyte.gz"
        write_idx(path, torch.zeros(599, dtype=torch.uint8).numpy())
    err = run(["--config", SMOKE, "--data.data_dir", str(folder), *QUIET], 2)
    assert path.name in err
    assert not list(tmp_path.glob("logs/smoke/version_1"))  # found before anything was written


# 4. output that cannot be written; and --trainer.default_root_dir moves the run
@pytest.mark.parametrize("where", ["/proc/pcn-logs", "FILE"])
def test_unwritable_output_is_an_error(where, run, tmp_path, fmnist_session_dir):
    if where == "FILE":
        (tmp_path / "afile").write_text("x")
        where = str(tmp_path / "afile" / "logs")
    err = run(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET,
               "--trainer.logger.init_args.save_dir", where], 2)
    assert "cannot write the run's output" in err


def test_default_root_dir_redirects_the_run(run, tmp_path, fmnist_session_dir):
    run(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, "--test", "false",
         "--trainer.default_root_dir", str(tmp_path / "elsewhere")], 0)
    assert list((tmp_path / "elsewhere" / "logs" / "smoke" / "version_0" / "checkpoints").glob("last.ckpt"))
    assert not (tmp_path / "logs" / "smoke" / "version_1").exists()


# 5. extending a finished cosine run keeps learning, and says so
def test_extending_a_finished_run_continues_with_a_stretched_schedule(run, tmp_path, fmnist_session_dir, capsys):
    base = ["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, "--test", "false",
            "--model.lr_scheduler", "cosine", "--trainer.max_epochs", "2"]
    run(base, 0)
    first = tmp_path / "logs" / "smoke" / "version_1" / "checkpoints" / "last.ckpt"
    w2 = torch.load(first, weights_only=False)
    assert w2["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # the schedule ended
    with pytest.warns(UserWarning, match="cosine schedule was made for 2 epochs; this run goes to 3"):
        run(base[:-2] + ["--trainer.max_epochs", "3", "--ckpt_path", str(first)], 0)
    w3 = torch.load(tmp_path / "logs" / "smoke" / "version_2" / "checkpoints" / "last.ckpt", weights_only=False)
    assert w3["epoch"] == 2
    assert w3["lr_schedulers"][0]["T_max"] == 3
    changed = [k for k in w2["state_dict"] if not torch.equal(w2["state_dict"][k], w3["state_dict"][k])]
    assert changed  # epoch 3 trained at a learning rate above zero


# 6. the Python API takes the shapes users have and refuses bad values
def test_python_api_shapes_and_bad_values(run, tmp_path, fmnist_session_dir):
    run(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, "--test", "false"], 0)
    ckpt = next((tmp_path / "logs" / "smoke" / "version_1" / "checkpoints").glob("best-*.ckpt"))
    m = PCNModule.load_from_checkpoint(ckpt, map_location="cpu")
    x = torch.rand(6, 1, 28, 28)
    assert torch.equal(m.predict_logits(x), m.predict_logits(x.reshape(6, 784)))
    for bad in (torch.full((2, 784), float("nan")), torch.full((2, 784), float("inf"))):
        with pytest.raises(cli.ConfigError, match="NaN or inf"):
            m.predict_logits(bad)
    with pytest.raises(cli.ConfigError, match=r"inputs of shape \(B, 784\)"):
        m.predict_logits(torch.rand(3, 100))


# 7. a prediction does not depend on which samples share its batch
def test_evaluation_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    m = PCNModule.from_flat(dims=[784, 32, 10], output_dim=10, latent_init="random", T_infer=10)
    x = torch.rand(500, 784)
    whole = m.predict_logits(x)
    chunks = torch.cat([m.predict_logits(x[i:i + 128]) for i in range(0, 500, 128)])
    assert torch.equal(whole, chunks)
    # alone: the same latents; only a one-row product's rounding differs (another BLAS kernel)
    assert torch.allclose(m.predict_logits(x[7:8]), whole[7:8], rtol=1e-5, atol=1e-6)


# 8. Ctrl-C, YAML errors, warnings on the recommended setups
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, fmnist_session_dir, train):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    args = [sys.executable, str(REPO / "train.py"), "--config", SMOKE, "--data.data_dir", str(fmnist_session_dir),
            *QUIET, "--test", "false", "--trainer.max_epochs", "1000", "--trainer.limit_train_batches", "null"]
    # a shell's background job inherits SIGINT ignored: restore the default, as in a terminal
    p = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("logs/smoke/version_0/checkpoints/*.ckpt")):
        time.sleep(0.5)  # at least one epoch done: well inside training
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = communicate_or_kill(p)
    assert p.returncode == 130, err[-3000:]
    ckpt = tmp_path / "logs/smoke/version_0/checkpoints/interrupted.ckpt"
    assert ckpt.exists() and f"resume with --ckpt_path {ckpt}" in err
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] > 0
    r = train(args[2:-4] + ["--trainer.max_epochs", str(state["epoch"] + 2), "--ckpt_path", str(ckpt)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_yaml_error_names_the_file(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args: [unclosed\n")
    err = run(["--config", str(bad)], 2)
    assert str(bad) in err and "not valid YAML" in err and "line" in err


def test_balance_check_is_quiet_on_the_shipped_discriminative_setup(tmp_path, monkeypatch, capsys, fmnist_session_dir):
    """The label's term holds nearly all the energy there (low label precision, errors
    enter at the label): by design, not the seed's failure 6b."""
    import warnings

    from callbacks._common import PCNDiagnosticWarning

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli.main(["--config", str(REPO / "configs/fashion_mnist.yaml"), "--data.data_dir", str(fmnist_session_dir),
                       *QUIET, "--test", "false", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
                       "--trainer.limit_val_batches", "1", "--data.val_size", "64", "--data.batch_size", "64"])
    assert rc == 0
    msgs = [str(w.message) for w in caught if issubclass(w.category, PCNDiagnosticWarning)]
    assert not [m for m in msgs if "holds" in m], msgs
