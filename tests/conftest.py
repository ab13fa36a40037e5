"""Shared fixtures: tiny datasets written in the real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def fmnist_dir(tmp_path) -> Path:
    return make_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture(scope="session")
def fmnist_session_dir(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist") / "fashion-mnist")
