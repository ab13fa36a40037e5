"""Image folders (torchvision's ImageFolder convention), decoded once and cached.

    DIR/train/<class>/<image>.png      DIR/test/<class>/<image>.png   (PNG, JPEG, BMP, GIF, WebP)

The sorted class-folder names are the labels 0..K-1 (for the CIFAR copies this is
the official label order). Every image is decoded once, with a progress bar; the
uint8 arrays are cached as a NumPy .npz (no pickle: loading it cannot run code)
keyed by a fingerprint of the folder (every file's path, size and mtime), so a
changed, added or removed file decodes the folder anew. The cache lives in
DIR/.pcn_cache/ or, when DIR cannot be written, ~/.cache/pcn_lightning/.

Bad input stops before training with one `ConfigError` naming the file or folder:
a missing split, an empty class folder, train and test with different classes, a
file that is not an image or does not decode (truncated), images of different
sizes, a symlink loop, a folder name that is not valid UTF-8. Grayscale images
in an RGB folder (and RGBA, palette, CMYK images) are converted to RGB, said once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pcn_lightning.errors import ConfigError, DataNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")
CACHE_VERSION = 1


@dataclass
class ImageFolderData:
    """Both splits decoded: images (N, C, H, W) uint8, labels (N,) int64, class names."""

    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.train_images.shape[1:])

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the training images, in [0, 1] units."""
        x = self.train_images
        c = x.shape[1]
        flat = x.transpose(1, 0, 2, 3).reshape(c, -1)
        s1 = flat.sum(axis=1, dtype=np.float64)
        s2 = np.einsum("ij,ij->i", flat.astype(np.float64), flat.astype(np.float64))
        n = flat.shape[1]
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        return tuple(float(m / 255) for m in mean), tuple(float(s / 255) for s in std)


def is_image_folder(root: Path) -> bool:
    """Whether `root` follows the layout (a train/ or test/ subfolder)."""
    return any((root / s).is_dir() for s in SPLITS)


def _name(entry_name: str, where: Path) -> str:
    """A file or folder name that must be valid UTF-8 (Python keeps undecodable bytes as surrogates)."""
    try:
        entry_name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(entry_name)
        raise ConfigError(
            f"{where}: the name {raw!r} is not valid UTF-8; rename it (class names become labels and log text)"
        ) from None
    return entry_name


def scan(root: Path) -> dict[str, list[tuple[str, list[os.DirEntry]]]]:
    """Per split, the sorted class folders and their sorted image files; checks the layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"--data.data_dir {root} is not a folder; point it at a folder holding train/ and test/")
    out = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise ConfigError(
                f"{root} has no {split}/ folder; an image folder holds train/<class>/ and test/<class>/ "
                "(torchvision's ImageFolder layout)"
            )
        classes = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = _name(entry.name, folder)
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # a symlink loop, a dangling link
                raise ConfigError(f"{folder / name}: {exc.strerror or exc}; remove or fix it") from None
            if not is_dir:
                raise ConfigError(f"{folder / name} is a file in {folder}, which should hold only class folders; move it away")
            files = []
            try:
                entries = sorted(os.scandir(entry.path), key=lambda e: e.name)
            except OSError as exc:
                raise ConfigError(f"{folder / name}: {exc.strerror or exc}") from None
            for f in entries:
                fname = _name(f.name, folder / name)
                if fname.startswith("."):
                    continue
                try:
                    f.stat()  # follows links: a loop or a dangling link fails here
                    regular = f.is_file()
                except OSError as exc:
                    raise ConfigError(f"{folder / name / fname}: {exc.strerror or exc}; remove or fix it") from None
                if not regular:
                    raise ConfigError(f"{folder / name / fname} is not a file; a class folder holds only images")
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    raise ConfigError(
                        f"{folder / name / fname} is not an image (expected one of {', '.join(IMAGE_EXTENSIONS)}); "
                        "move it out of the data folder"
                    )
                files.append(f)
            if not files:
                raise ConfigError(f"{folder / name} is an empty class folder; remove it or add its images")
            classes.append((name, files))
        if not classes:
            raise ConfigError(f"{folder} holds no class folders; put each class's images in {folder}/<class>/")
        out[split] = classes
    train, test = [c for c, _ in out["train"]], [c for c, _ in out["test"]]
    if train != test:
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise ConfigError(
            f"{root}: train/ and test/ have different classes (only in train: {only_train[:5] or 'none'}; "
            f"only in test: {only_test[:5] or 'none'}); both splits must hold the same class folders"
        )
    return out


def fingerprint(listing: dict) -> str:
    """A digest of every image's split, class, name, size and modification time."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for split in SPLITS:
        for cls, files in listing[split]:
            for f in files:
                st = f.stat()
                h.update(f"{split}/{cls}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str):
    """One image as an (H, W) or (H, W, 3) uint8 array, and its original mode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            im.load()  # a truncated file fails here, not later
            if mode in ("L", "1", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be decoded as an image ({exc}); replace or remove the file") from None
    return arr, mode


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, mininterval=1.0)
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return None


def decode(root: Path, listing: dict) -> ImageFolderData:
    """Decode every image of both splits (a progress bar on stderr)."""
    total = sum(len(files) for split in SPLITS for _, files in listing[split])
    bar = _progress(total, f"decoding {root}")
    arrays: dict[str, list] = {s: [] for s in SPLITS}
    labels: dict[str, list] = {s: [] for s in SPLITS}
    modes: dict[str, int] = {}
    size, size_file = None, None
    try:
        for split in SPLITS:
            for label, (cls, files) in enumerate(listing[split]):
                for f in files:
                    arr, mode = _decode(f.path)
                    if size is None:
                        size, size_file = arr.shape[:2], f.path
                    elif arr.shape[:2] != size:
                        raise ConfigError(
                            f"images of different sizes: {f.path} is {arr.shape[1]}x{arr.shape[0]}, "
                            f"{size_file} is {size[1]}x{size[0]}; resize them all to one size"
                        )
                    modes[mode] = modes.get(mode, 0) + 1
                    arrays[split].append(arr)
                    labels[split].append(label)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()  # ends the bar's line: a message after it starts a line of its own
    gray = all(a.ndim == 2 for s in SPLITS for a in arrays[s])
    if not gray:
        others = {m: n for m, n in modes.items() if m != "RGB"}
        if others:
            said = ", ".join(f"{n} {m}" for m, n in sorted(others.items()))
            print(f"note: {root}: converted {said} image(s) to RGB", file=sys.stderr)

    def stack(items: list) -> np.ndarray:
        if gray:
            return np.stack(items)[:, None]
        rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in items]
        return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))

    classes = [c for c, _ in listing["train"]]
    return ImageFolderData(
        classes,
        stack(arrays["train"]), np.asarray(labels["train"], dtype=np.int64),
        stack(arrays["test"]), np.asarray(labels["test"], dtype=np.int64),
    )


def cache_dirs(root: Path) -> list[Path]:
    return [root / ".pcn_cache", Path.home() / ".cache" / "pcn_lightning"]


def _cache_name(root: Path, digest: str) -> str:
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return f"images-{tag}-{digest}.npz"


def _read_cache(root: Path, digest: str) -> Optional[ImageFolderData]:
    for d in cache_dirs(root):
        path = d / _cache_name(root, digest)
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                return ImageFolderData(
                    [str(c) for c in z["classes"]], z["train_images"], z["train_labels"],
                    z["test_images"], z["test_labels"],
                )
        except Exception:  # a damaged cache is rebuilt, never trusted
            continue
    return None


def _write_cache(root: Path, digest: str, data: ImageFolderData) -> Optional[Path]:
    """Write the cache atomically (a temporary file, then a rename); drop this folder's older caches."""
    tag_prefix = _cache_name(root, digest).rsplit("-", 1)[0] + "-"
    for d in cache_dirs(root):
        try:
            d.mkdir(parents=True, exist_ok=True)
            path = d / _cache_name(root, digest)
            tmp = d / f".{path.name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.savez(fh, classes=np.asarray(data.classes), train_images=data.train_images,
                         train_labels=data.train_labels, test_images=data.test_images, test_labels=data.test_labels)
            os.replace(tmp, path)
            for old in d.glob(tag_prefix + "*.npz"):
                if old != path:
                    old.unlink(missing_ok=True)
            return path
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except (OSError, UnboundLocalError):
                pass
            continue
    return None


_MEMO: dict[tuple[str, str], ImageFolderData] = {}


def load_image_folder(root, use_cache: bool = True) -> ImageFolderData:
    """Both splits of an image folder: from this process's memory, the disk cache, or decoded."""
    root = Path(root)
    listing = scan(root)
    digest = fingerprint(listing)
    key = (str(root.resolve()), digest)
    if key in _MEMO:
        return _MEMO[key]
    data = _read_cache(root, digest) if use_cache else None
    if data is None:
        data = decode(root, listing)
        if use_cache:
            _write_cache(root, digest, data)
    _MEMO[key] = data
    return data
