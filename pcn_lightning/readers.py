"""The on-disk formats the DataModule reads: Fashion-MNIST's idx files (gzipped or
not, found where Debian's `dataset-fashion-mnist` puts them or in a folder given) and
CIFAR's pickled batches (read without unpickling anything but arrays). Each reader
returns uint8 images (N, C, H, W) and int64 labels, or raises one ConfigError or
DataNotFoundError that says what to change."""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from pcn_lightning.errors import ConfigError, DataNotFoundError

# Where Debian's `dataset-fashion-mnist` package puts the idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an MNIST-style idx file (optionally gzipped) into a numpy array, checking
    that the file holds exactly the values its header announces."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # truncated or not gzip at all
        raise ConfigError(f"{path} is corrupt or truncated and cannot be read ({exc}); replace the file") from None
    if len(data) < 4:
        raise ConfigError(f"{path} is corrupt or truncated: {len(data)} bytes, no idx header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise ConfigError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    expected = int(np.prod(shape)) + 4 + 4 * ndim
    if len(data) != expected:
        raise ConfigError(
            f"{path} is corrupt or truncated: its header announces {shape} values ({expected} bytes) "
            f"but it holds {len(data)} bytes; replace the file"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


FMNIST_NAMES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


def find_fashion_mnist(data_dir: Optional[Union[str, Path]]) -> Path:
    """The folder that holds all four Fashion-MNIST idx files (gzipped or not).

    A `data_dir` the user gave is the folder used (or its FashionMNIST/raw or
    fashion-mnist subfolder): never silently replaced by another copy. Without one,
    Debian's package location."""
    if data_dir is None:
        folder = DEBIAN_FASHION_MNIST
        if all(_find_idx(folder, s) for pair in FMNIST_FILES.values() for s in pair):
            return folder
        raise DataNotFoundError(
            f"Fashion-MNIST was not found in {folder}. Install it with `apt-get install "
            "dataset-fashion-mnist` (Debian), or pass --data.data_dir pointing at a folder with the four "
            f"idx files ({FMNIST_NAMES}, each gzipped or not)."
        )
    d = Path(data_dir)
    if not d.exists():
        raise DataNotFoundError(
            f"--data.data_dir {d} does not exist; point it at a folder with the four Fashion-MNIST idx files "
            "(or leave it unset to use Debian's package: `apt-get install dataset-fashion-mnist`)"
        )
    if not d.is_dir():
        raise DataNotFoundError(f"--data.data_dir {d} is a file, not a folder; point it at the folder holding the idx files")
    best, missing = None, None
    for folder in (d, d / "FashionMNIST" / "raw", d / "fashion-mnist"):
        absent = [s for pair in FMNIST_FILES.values() for s in pair if not _find_idx(folder, s)]
        if not absent:
            return folder
        if missing is None or len(absent) < len(missing):
            best, missing = folder, absent
    raise DataNotFoundError(
        f"--data.data_dir {d}: {best} lacks {', '.join(missing)} (gzipped or not); put the four Fashion-MNIST "
        "idx files there (or leave --data.data_dir unset to use Debian's `apt-get install dataset-fashion-mnist`)"
    )


def load_fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = FMNIST_FILES[split]
    img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ConfigError(f"{img_path} holds images of shape {images.shape[1:]}, not 28 x 28")
    if labels.ndim != 1:
        raise ConfigError(f"{lbl_path} is not a label file (shape {labels.shape})")
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels")
    return images.reshape(images.shape[0], 1, 28, 28), labels.astype(np.int64)


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def cifar_present(root: Path, name: str) -> bool:
    folder, train_files, test_files, _ = CIFAR_LAYOUT[name]
    return all((root / folder / f).is_file() for f in train_files + test_files)


class CifarBatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds (dicts, lists, bytes, strings, numbers and NumPy
    arrays) and nothing else: a pickle that names any other callable (how a poisoned file
    runs code) is refused before it is called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: a CIFAR batch holds only data, never code")


def read_cifar_batch(path: Path) -> dict:
    """One pickled CIFAR batch, read with `CifarBatchUnpickler` (a file that asks for code is refused)."""
    with open(path, "rb") as fh:
        return CifarBatchUnpickler(fh, encoding="bytes").load()


def load_cifar(root: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR's pickled batches: images (N, 3, 32, 32) uint8 and labels (N,)."""
    folder, train_files, test_files, label_key = CIFAR_LAYOUT[name]
    images, labels = [], []
    for f in train_files if split == "train" else test_files:
        path = root / folder / f
        try:
            entry = read_cifar_batch(path)
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            lab = np.asarray(entry[label_key], dtype=np.int64)
        except Exception as exc:  # truncated pickle, wrong file, missing keys
            raise ConfigError(f"{path} is corrupt or not a CIFAR batch ({type(exc).__name__}: {exc}); replace the file") from None
        if data.ndim != 2 or data.shape[1] != 3072 or lab.shape != (data.shape[0],):
            raise ConfigError(f"{path} holds {data.shape} images and {lab.shape} labels, not N x 3072 and N")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)
