"""Shared helpers and fixtures: tiny datasets written in the real on-disk formats,
and train.py run in a fresh interpreter (`run_train`) or in this one (`train`)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n N` (pytest-xdist): one torch thread per worker (and in their
    import torch  # children), or the workers' threads oversubscribe the cores and every test slows down

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    # The controller of `-n N` re-creates each warning a worker reports by importing the
    # module of the warning's class, on one receiving thread per worker. Two workers
    # warning from lightning at once made two threads import lightning's circular modules
    # together: importlib's _DeadlockError killed a worker (CI, 2026-12-05). Imported
    # here, once, before any worker starts, those imports find the modules loaded and take
    # no lock. Our own warning class (PCNDiagnosticWarning) lives in callbacks._common.
    import importlib

    for module in ("lightning.pytorch", "callbacks._common"):
        importlib.import_module(module)


# The longest tests (about 30-115 s each in a worker), started first: with two workers
# the suite's wall time is about half the summed test time only if no long test
# starts last (longest-first scheduling).
LONGEST_FIRST = ("tests/integration/test_regression.py::test_thirty_steps_reproduce_the_pre_redesign_weights"
                 "[fashion_mnist_seed_recipe]", "tests/integration/test_configs_train.py::test_gpu_script",
                 "tests/integration/test_untrusted_files_and_preemption.py::test_sigterm_saves")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {item: next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)), len(LONGEST_FIRST))
            for item in items}
    items.sort(key=rank.__getitem__)  # stable: the rest keep their order


class Finished(NamedTuple):
    """A train.py run's outcome, in subprocess.CompletedProcess's names."""

    returncode: int
    stdout: str
    stderr: str


def run_train(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in a fresh interpreter, as a user runs it: for what only a
    process shows (signals, DDP workers, exit codes, interpreter start-up)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def communicate_or_kill(p: subprocess.Popen, timeout: float = 120):
    """p.communicate(timeout), and p killed if it has not ended then (a run that did not
    stop on a slow machine must not outlive its test)."""
    try:
        return p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def train(monkeypatch, capsys):
    """train.py's `main` in this process, from the folder `cwd`: the same parsing,
    checks, Trainer and exit code as `run_train`, without starting an interpreter."""
    from pcn_lightning import cli

    def call(args, cwd) -> Finished:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as exc:  # --print_config, --help
            rc = exc.code if isinstance(exc.code, int) else 0
        out = capsys.readouterr()
        return Finished(rc, out.out, out.err)
    return call


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte idx file, gzipped when the name ends in .gz."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def make_fashion_mnist(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """A Debian-style folder of the four Fashion-MNIST idx .gz files, learnable:
    each class is a noisy copy of its own random template."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    templates = rng.integers(0, 256, size=(10, 28, 28))
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        noise = rng.normal(0, 40, size=(n, 28, 28))
        images = np.clip(templates[labels] + noise, 0, 255)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def make_cifar(root: Path, name: str, n_per_file: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (`cifar-10-batches-py`) or CIFAR-100 (`cifar-100-python`) in the
    real pickle format: uint8 rows of 3072 values (R, G, B planes) and labels."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        classes = 10
    else:
        folder = root / "cifar-100-python"
        files = ["train", "test"]
        classes = 100
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        n = n_per_file * (5 if name == "cifar100" and f == "train" else 1)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        entry = {b"batch_label": f.encode(), b"data": data, b"filenames": [b"x.png"] * n}
        if name == "cifar10":
            entry[b"labels"] = labels
        else:
            entry[b"fine_labels"] = labels
            entry[b"coarse_labels"] = [l // 5 for l in labels]
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh)
    meta = folder / ("batches.meta" if name == "cifar10" else "meta")
    with open(meta, "wb") as fh:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(classes)]}, fh)
    return root


def write_image_folder(root, classes=("b_cat", "a_dog", "c_eel"), n=(3, 2), size=(6, 5), mode="RGB", ext="png", seed=0):
    """An image folder (train/<class>/, test/<class>/): n[0] train and n[1] test images
    per class, `size` (width, height); class k's pixels sit near 40 k + noise."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), n):
        for k, cls in enumerate(sorted(classes)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
                arr = np.clip(40 * k + rng.integers(0, 30, (size[1], size[0], channels)), 0, 255).astype(np.uint8)
                Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode).save(d / f"{i}.{ext}")
    return root


def make_cifar_folder(root, classes, n=(2, 1)):
    """A CIFAR-shaped image folder (32x32 PNG) with the given class names."""
    return write_image_folder(root, classes=classes, n=n, size=(32, 32))


SHAKESPEARE_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 12


@pytest.fixture
def corpus(tmp_path):
    """A tiny Tiny-Shakespeare-like corpus (input.txt) in its own folder."""
    path = tmp_path / "shakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_text(SHAKESPEARE_TEXT)
    return path


@pytest.fixture
def fmnist_dir(tmp_path) -> Path:
    return make_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture(scope="session")
def fmnist_session_dir(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist") / "fashion-mnist")
