"""Reliability and security, round 3: no file runs code, preemption loses nothing, a crash
or a full disk mid-write leaves a loadable run, the Python API takes what users hand it.
Each fault through the real entry point: exit code, one `error:` line, what is left on disk."""

import errno
import io
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from pcn_lightning import BackpropTwin, PCNDataModule, PCNModule, cli
from pcn_lightning.builders import NetworkSpec
from pcn_lightning.checkpoints import load_checkpoint, load_module
from pcn_lightning.errors import ConfigError
from pcn_lightning.settings import Inference, Learning
from tests.conftest import REPO, communicate_or_kill

SMOKE = str(REPO / "configs/smoke.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--test", "false"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def one_error(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# 1. no code runs from a checkpoint -----------------------------------------------------
class RunsAShellCommand:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture(params=["torch_save", "plain_pickle"])
def crafted(request, tmp_path):
    """A checkpoint that runs `touch pwned` when fully unpickled (torch.save's zip format, or a bare pickle)."""
    path = tmp_path / "downloaded.ckpt"
    payload = {"state_dict": {}, "hyper_parameters": {"x": RunsAShellCommand()}}
    if request.param == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def test_crafted_checkpoint_is_refused_by_train_py(crafted, tmp_path, monkeypatch, capsys, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, "--ckpt_path", str(crafted)])
    line = one_error(capsys.readouterr().err)
    assert rc == 2
    assert "asks to run code" in line and "refused" in line and "posix.system" in line
    assert not (tmp_path / "pwned").exists()
    assert list(tmp_path.rglob("*.ckpt")) == [crafted]  # nothing written


def test_crafted_checkpoint_is_refused_by_sample(crafted, tmp_path, monkeypatch, capsys):
    from pcn_lightning import sample
    monkeypatch.chdir(tmp_path)
    assert sample.main(["--ckpt", str(crafted)]) == 2
    assert "asks to run code" in one_error(capsys.readouterr().err)
    assert not (tmp_path / "pwned").exists()


def test_crafted_checkpoint_is_refused_by_the_loaders(crafted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for load in (load_checkpoint, load_module):
        with pytest.raises(ConfigError, match="asks to run code"):
            load(crafted)
    with pytest.raises(Exception):  # Lightning's own load, as the project calls it
        PCNModule.load_from_checkpoint(crafted, map_location="cpu", weights_only=True)
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(text)
    # a last.ckpt link whose file is gone names the newest complete checkpoint beside it
    (tmp_path / "latest-epoch=3-step=9.ckpt").write_bytes(b"x")
    (tmp_path / "last.ckpt").symlink_to("latest-epoch=2-step=6.ckpt")
    with pytest.raises(ConfigError, match=r"which is gone; resume from .*latest-epoch=3-step=9.ckpt"):
        load_checkpoint(tmp_path / "last.ckpt")


def test_checkpoints_saved_from_the_python_api_load_weights_only(tmp_path, fmnist_session_dir):
    """Settings dataclasses and a Path in the hyper-parameters: the allow-listed types."""
    dm = PCNDataModule(dataset="fashion_mnist", data_dir=Path(fmnist_session_dir), batch_size=32, val_size=64)
    models = {"pcn": PCNModule(network=NetworkSpec(dims=[784, 16, 10]), inference=Inference(T_infer=3),
                               learning=Learning(eta_learn=0.001)),
              "twin": BackpropTwin.from_flat(dims=[784, 16, 10], output_dim=10)}
    for name, model in models.items():
        trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(model, datamodule=dm)
        path = tmp_path / f"{name}.ckpt"
        trainer.save_checkpoint(path)
        loaded = load_module(path, (type(model).__name__,))
        same = type(model).load_from_checkpoint(path, map_location="cpu", weights_only=True)
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v) and torch.equal(same.state_dict()[k], v)


# 2. preemption: SIGTERM ----------------------------------------------------------------
EIGHT_BATCHES = ["--data.val_size", "88", "--data.batch_size", "64", "--trainer.limit_train_batches", "null",
                 "--trainer.limit_val_batches", "1", "--model.init_args.latent_init", "random"]


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_exactly(tmp_path, fmnist_session_dir, train):
    base = ["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, *EIGHT_BATCHES]
    p = subprocess.Popen([sys.executable, str(REPO / "train.py"), *base, "--trainer.max_epochs", "1000"],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "logs/smoke/version_0/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not list(folder.glob("latest-*.ckpt")):
        time.sleep(0.2)  # one epoch done: well inside training
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = communicate_or_kill(p)
    assert p.returncode == 143, err[-3000:]
    ckpt = folder / "interrupted.ckpt"
    assert f"stopped by SIGTERM at training step" in err and f"resume with --ckpt_path {ckpt}" in err
    state = load_checkpoint(ckpt)
    assert state["global_step"] > 0
    end = str(state["epoch"] + 2)
    # the signal needed a process; resuming and the straight run do not
    resumed = train(base + ["--trainer.max_epochs", end, "--ckpt_path", str(ckpt)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = train(base + ["--trainer.max_epochs", end], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a = load_checkpoint(tmp_path / "logs/smoke/version_1/checkpoints/last.ckpt")
    b = load_checkpoint(tmp_path / "logs/smoke/version_2/checkpoints/last.ckpt")
    assert a["global_step"] == b["global_step"]
    for k in b["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "16",
       "--data.val_size", "88", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1"]


def processes_of(marker: str) -> list[int]:
    """The live processes whose command line holds `marker` (a run's own folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and "train.py" in cmdline:
            found.append(int(pid))
    return found


def start_ddp_run(tmp_path, data_dir):
    """Two gloo ranks on the CPU, well inside training (an epoch's checkpoint written)."""
    root = tmp_path / "run"
    args = ["--config", SMOKE, "--data.data_dir", str(data_dir), *QUIET, *DDP, "--trainer.max_epochs", "1000",
            "--trainer.default_root_dir", str(root)]
    p = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = root / "logs/smoke/version_0/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not list(folder.glob("latest-*.ckpt")):
        time.sleep(0.2)
    ranks = processes_of(str(root))
    assert len(ranks) == 2 and p.pid in ranks, ranks
    return p, [r for r in ranks if r != p.pid][0], folder, str(root)


def ended_cleanly(p, marker: str, within: float = 60) -> str:
    t0 = time.time()
    _, err = p.communicate(timeout=within)  # no hang: bounded
    while processes_of(marker) and time.time() - t0 < within:
        time.sleep(0.2)
    assert not processes_of(marker), "processes left behind"
    return err


@pytest.mark.xdist_group("ddp")
def test_sigterm_under_ddp_stops_every_rank_at_the_same_batch(tmp_path, fmnist_session_dir):
    p, worker, folder, marker = start_ddp_run(tmp_path, fmnist_session_dir)
    p.send_signal(signal.SIGTERM)  # to the process the scheduler started: rank zero
    err = ended_cleanly(p, marker)
    assert p.returncode == 143, err[-3000:]
    assert err.count("stopped by SIGTERM") == 1 and f"resume with --ckpt_path {folder / 'interrupted.ckpt'}" in err
    assert load_checkpoint(folder / "interrupted.ckpt")["global_step"] > 0


@pytest.mark.xdist_group("ddp")
def test_a_dead_ddp_rank_ends_the_run_with_an_error(tmp_path, fmnist_session_dir):
    p, worker, folder, marker = start_ddp_run(tmp_path, fmnist_session_dir)
    os.kill(worker, signal.SIGKILL)
    err = ended_cleanly(p, marker)
    # whichever comes first: the collective fails (gloo: a closed connection), or Lightning's
    # launcher, which checks its workers every 5 s, kills the run
    assert p.returncode in (1, -signal.SIGKILL), err[-3000:]
    if p.returncode == 1:
        assert "another DDP process stopped" in one_error(err) and str(folder / "last.ckpt") in err
    else:
        assert "terminated with code -9" in err
    assert load_checkpoint(folder / "last.ckpt")["global_step"] > 0


# 3. a crash or a full disk while writing a checkpoint ----------------------------------
KILL_ON_EPOCH_1 = """
import io, os, signal, sys, torch
real = torch.save
def dying_save(obj, fh):
    if isinstance(obj, dict) and obj.get("epoch") == 1:  # the second epoch's first checkpoint
        buf = io.BytesIO()
        real(obj, buf)
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half written, then kill -9
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, fh)
torch.save = dying_save
from pcn_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def assert_every_checkpoint_loads(folder: Path) -> None:
    for p in folder.glob("*.ckpt"):
        assert load_checkpoint(p)["state_dict"], p


def test_kill_9_mid_write_leaves_the_last_checkpoint_whole(tmp_path, fmnist_session_dir, train):
    base = ["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET]
    r = subprocess.run([sys.executable, "-c", KILL_ON_EPOCH_1, *base, "--trainer.max_epochs", "3"], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    folder = tmp_path / "logs/smoke/version_0/checkpoints"
    assert load_checkpoint(folder / "last.ckpt")["epoch"] == 0  # the previous one, whole
    assert_every_checkpoint_loads(folder)  # no partial file under a checkpoint's name
    assert [p.name for p in folder.glob(".*.partial")]  # the unfinished write, under a hidden name
    resumed = train(base + ["--trainer.max_epochs", "2", "--ckpt_path", str(folder / "last.ckpt")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_full_disk_is_one_error_and_the_previous_checkpoint_loads(tmp_path, monkeypatch, capsys, fmnist_session_dir):
    monkeypatch.chdir(tmp_path)
    real = torch.save

    def disk_fills(obj, fh):
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            buf = io.BytesIO()
            real(obj, buf)
            fh.write(buf.getvalue()[:1000])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, fh)

    monkeypatch.setattr(torch, "save", disk_fills)
    rc = cli.main(["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET, "--trainer.max_epochs", "3"])
    line = one_error(capsys.readouterr().err)
    assert rc == 2
    folder = tmp_path / "logs/smoke/version_0/checkpoints"
    assert "the disk is full" in line and f"resume with --ckpt_path {folder / 'last.ckpt'}" in line
    assert load_checkpoint(folder / "last.ckpt")["epoch"] == 0
    assert_every_checkpoint_loads(folder)
    assert not list(folder.glob(".*.partial"))  # nothing left behind


# 5. the Python API takes what users hand it --------------------------------------------
def api_models():
    torch.manual_seed(0)
    return {"generative": PCNModule.from_flat(dims=[784, 16, 10], output_dim=10, latent_init="random", T_infer=4),
            "discriminative": PCNModule.from_flat(dims=[784, 16, 10], output_dim=10, direction="discriminative",
                                                  latent_init="feedforward", activations="relu", T_infer=4),
            "energy": PCNModule.from_flat(dims=[784, 16, 10], output_dim=10, eval_mode="energy", T_infer=2),
            "twin": BackpropTwin.from_flat(dims=[784, 16, 10], output_dim=10)}


@pytest.mark.parametrize("name", ["generative", "discriminative", "energy", "twin"])
def test_predictions_take_any_float_dtype_layout_and_batch_size(name):
    m = api_models()[name]
    x = torch.rand(4, 784)
    strided = torch.zeros(4, 1568)
    strided[:, ::2] = x
    calls = [m.predict_logits] + ([lambda x: m.predict_uncertainty(x)["probs"]] if name != "twin" else [])
    for predict in calls:
        ref = predict(x)
        assert ref.shape == (4, 10) and ref.dtype == torch.float32
        assert torch.allclose(predict(x.double()), ref, atol=1e-6)  # float64: made the weights' dtype
        assert predict(x.half()).dtype == torch.float32 and predict(x.bfloat16()).dtype == torch.float32
        assert torch.equal(predict(x.t().contiguous().t()), ref)  # non-contiguous
        assert torch.equal(predict(strided[:, ::2]), ref)
        assert torch.equal(predict(x.reshape(4, 1, 28, 28)), ref)
        assert torch.allclose(predict(x[2:3]), ref[2:3], rtol=1e-5, atol=1e-6)  # a batch of one
        assert predict(x[:0]).shape == (0, 10)  # an empty batch
    if name != "twin":
        out = m.predict_uncertainty(x[:0])
        assert out["energy"].shape == (0,) and out["term_energies"].shape == (0, len(m.net.terms))
    # what cannot be guessed: one ConfigError saying what to pass
    for bad, says in [((x * 255).to(torch.uint8), "floating point"), (x.long(), "x.float\\(\\) / 255"),
                      (x > 0.5, "floating point"), (x.to(torch.complex64), "floating point"),
                      (x.tolist(), "torch.as_tensor"), (x[0], "add the batch dimension"),
                      (torch.rand(3, 100), r"inputs of shape \(B, 784\)")]:
        with pytest.raises(ConfigError, match=says):
            m.predict_logits(bad)


def test_generate_takes_any_integer_classes():
    m = api_models()["generative"]
    ref = m.generate(torch.tensor([0, 3, 9]))
    assert ref.shape == (3, 784)
    assert torch.equal(m.generate(torch.tensor([0, 3, 9], dtype=torch.int32)), ref)
    assert torch.equal(m.generate([0, 3, 9]), ref)
    assert torch.equal(m.generate(torch.arange(10)[::3]), m.generate([0, 3, 6, 9]))  # non-contiguous
    assert torch.allclose(m.generate(torch.tensor([3])), ref[1:2], rtol=1e-5, atol=1e-6)  # a batch of one
    assert m.generate(torch.tensor([], dtype=torch.long)).shape == (0, 784)
    for bad, says in [(torch.tensor([0.0, 3.0]), "integer class indices"), (torch.tensor(3), r"shape \(B,\)"),
                      (torch.tensor([10]), r"\[0, 10\)"), (torch.tensor([-1]), r"\[0, 10\)")]:
        with pytest.raises(ConfigError, match=says):
            m.generate(bad)


# 4. a kill while last.ckpt is re-pointed -------------------------------------------------
KILL_AT_RELINK = """
import os, signal, sys
from lightning.pytorch.callbacks import ModelCheckpoint
where = sys.argv.pop(1)
real_replace, real_remove = os.replace, ModelCheckpoint._remove_checkpoint
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def replace(src, dst):
    if str(dst).endswith("last.ckpt") and os.path.islink(dst):  # re-pointing an existing last.ckpt
        if where == "before_switch":
            die()
        real_replace(src, dst)
        if where == "after_switch":
            die()
        return
    real_replace(src, dst)
def remove(self, trainer, path):
    real_remove(self, trainer, path)
    if where == "after_removal" and os.path.basename(str(path)).startswith("latest-"):
        die()  # the previous checkpoint gone
os.replace, ModelCheckpoint._remove_checkpoint = replace, remove
from pcn_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where", ["before_switch", "after_switch", "after_removal"])
def test_a_kill_while_last_ckpt_is_re_pointed_leaves_it_loadable(where, tmp_path, fmnist_session_dir):
    """`save_last: link` re-points last.ckpt at every epoch's checkpoint: killed just before
    the link switches, just after, or just after the previous checkpoint is removed, last.ckpt still
    names a whole checkpoint (the previous one or the new one), never nothing."""
    base = ["--config", SMOKE, "--data.data_dir", str(fmnist_session_dir), *QUIET]
    r = subprocess.run([sys.executable, "-c", KILL_AT_RELINK, where, *base, "--trainer.max_epochs", "3"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    folder = tmp_path / "logs/smoke/version_0/checkpoints"
    last = folder / "last.ckpt"
    assert last.exists(), f"last.ckpt dangles: {os.readlink(last) if last.is_symlink() else 'missing'}"
    assert load_checkpoint(last)["epoch"] in (0, 1)
    assert_every_checkpoint_loads(folder)
