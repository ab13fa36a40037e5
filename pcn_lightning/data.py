"""Data: CIFAR-10, CIFAR-100, Fashion-MNIST and any image folder, as flat vectors.

The readers parse the datasets' real on-disk formats themselves (CIFAR's pickled
batches, read by an unpickler that admits only what a batch holds; MNIST-style idx
files, gzipped or not; folders of PNG/JPEG images, see `image_folder`), so no
integrity check stands in the way of the Debian package or of small fixtures in
the same format. torchvision is used only to download CIFAR on a machine that has
a network. CIFAR given as an image folder (train/<class>/*.png, test/<class>/*.png)
is checked against the official class names, whose sorted order is the label order.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pcn_lightning.errors import ConfigError, DataNotFoundError
from pcn_lightning.image_folder import ImageFolderData, is_image_folder, load_image_folder

# Where Debian's `dataset-fashion-mnist` package puts the idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

DATASETS = {
    # name: (input_dim, num_classes, per-channel mean, per-channel std, channels)
    "cifar10": (3072, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 3),
    "cifar100": (3072, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 3),
    "fashion_mnist": (784, 10, (0.2860,), (0.3530,), 1),
}

FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


IMAGE_FOLDER = "image_folder"  # any folder of train/<class>/ and test/<class>/ images

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
OFFICIAL_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


def check_dataset(name: str) -> str:
    if name not in DATASETS and name != IMAGE_FOLDER:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS) + [IMAGE_FOLDER]} (--data.dataset)")
    return name


def uses_image_folder(name: str, data_dir) -> bool:
    """`image_folder`, or CIFAR whose --data.data_dir holds train/ and test/ class folders."""
    if check_dataset(name) == IMAGE_FOLDER:
        if data_dir is None:
            raise ConfigError("dataset image_folder needs --data.data_dir DIR (a folder holding train/<class>/ and test/<class>/)")
        return True
    return name in OFFICIAL_CLASSES and data_dir is not None and is_image_folder(Path(data_dir))


def image_folder_of(name: str, data_dir) -> ImageFolderData:
    """The decoded image folder; for CIFAR, checked to hold the official classes in their order."""
    data = load_image_folder(Path(data_dir))
    official = OFFICIAL_CLASSES.get(name)
    if official is not None and data.classes != official:
        missing = [c for c in official if c not in data.classes][:5]
        extra = [c for c in data.classes if c not in official][:5]
        raise ConfigError(
            f"--data.data_dir {data_dir} does not hold {name}'s classes (missing: {missing or 'none'}; "
            f"not {name}'s: {extra or 'none'}); use --data.dataset image_folder for another dataset"
        )
    if official is not None and data.shape != [3, 32, 32]:
        raise ConfigError(f"--data.data_dir {data_dir}: {name} images are 3 x 32 x 32, these are {data.shape}")
    return data


def input_dim_of(name: str, data_dir=None) -> int:
    """Input size of a dataset (used to link data to the model in the CLI)."""
    return int(np.prod(input_shape_of(name, data_dir)))


def input_shape_of(name: str, data_dir=None) -> list[int]:
    """Shape of one sample (channels, height, width), linked from the data to the model."""
    if check_dataset(name) == IMAGE_FOLDER and uses_image_folder(name, data_dir):  # (raises without data_dir)
        return image_folder_of(name, data_dir).shape
    dim, _, _, _, channels = DATASETS[name]
    side = int(round((dim // channels) ** 0.5))
    return [channels, side, side]


def num_classes_of(name: str, data_dir=None) -> int:
    """Number of classes of a dataset (used to link data to the model in the CLI)."""
    if check_dataset(name) == IMAGE_FOLDER and uses_image_folder(name, data_dir):  # (raises without data_dir)
        return len(image_folder_of(name, data_dir).classes)
    return DATASETS[name][1]


# ------------------------------------------------------------------- readers
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


def to_flat_tensor(images: np.ndarray, mean, std, normalize: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C*H*W) in [0, 1], or standardized per channel."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if normalize:
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        x = (x - m) / s
    return x.reshape(x.shape[0], -1).contiguous()


def augment_images(x: torch.Tensor, shape: tuple, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per sample.

    x is (B, C*H*W) or (B, C, H, W); returned in the same layout."""
    B = x.shape[0]
    C, H, W = shape
    img = x.reshape(B, C, H, W)
    flip = torch.rand(B, generator=generator, device=x.device) < 0.5
    img = torch.where(flip[:, None, None, None], img.flip(3), img)
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows, cols].reshape(x.shape)


# ------------------------------------------------------------------- sampler
class GlobalBatchSampler(DistributedSampler):
    """Training order that does not depend on the number of devices.

    Every epoch draws one permutation of the training set (seeded by `seed` and the
    epoch, or the identity without `shuffle`) and cuts it into global batches of
    `batch_size * world_size` samples, dropping the incomplete last one. Rank r
    takes the r-th slice of `batch_size` samples of every global batch. So a run on
    N devices with per-device batch B sees exactly the batches that one device sees
    with batch N*B, in the same order; with the all-reduced gradients the two runs
    compute the same updates.

    A DistributedSampler subclass, so Lightning keeps it instead of substituting
    its own (which always shuffles). `start_batch` skips batches already consumed
    in the current epoch (exact mid-epoch resume).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.num_replicas = rank, world_size
        self.epoch = 0
        self.start_batch = 0
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = n // self.global_batch
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the global batch ({batch_size} per device x {world_size} devices) is larger than "
                f"the {n} training samples, and the last incomplete batch is dropped: lower --data.batch_size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def __iter__(self):
        perm = self.permutation()
        out = []
        for k in range(self.start_batch, self.batches_per_epoch):
            start = k * self.global_batch + self.rank * self.batch_size
            out.append(perm[start : start + self.batch_size])
        self.start_batch = 0  # a skip applies to the resumed epoch only
        return iter(torch.cat(out).tolist() if out else [])

    def __len__(self) -> int:
        # The whole epoch, also when resuming mid-epoch: Lightning counts the batches
        # of a resumed epoch from where the checkpoint left off.
        return self.batches_per_epoch * self.batch_size


# ---------------------------------------------------------------- datamodule
class PCNDataModule(L.LightningDataModule):
    """CIFAR-10, CIFAR-100, Fashion-MNIST or an image folder, flattened, held in memory.

    Args:
        dataset: cifar10, cifar100, fashion_mnist or image_folder.
        data_dir: where the data lives: the folder used, never silently replaced
            (CIFAR is downloaded there). Unset: Fashion-MNIST from Debian's
            /usr/share/datasets/fashion-mnist, CIFAR in data/. A folder holding
            train/<class>/ and test/<class>/ images (PNG, JPEG) is read as an image
            folder: for image_folder (shape, classes and normalization statistics
            from the data), and for cifar10/cifar100 (their official classes checked).
        batch_size: per-device batch size (the effective batch under DDP is this
            times the number of devices).
        eval_batch_size: batch size for validation and test (default batch_size).
        num_workers: DataLoader workers.
        normalize: standardize each channel (mean/std of the training set) instead
            of scaling pixels to [0, 1]; see the seed's section 6c before turning
            it on under a ReLU layer 0.
        val_size: samples carved out of the training set for validation (an int,
            or a fraction < 1).
        split_seed: seed of the train/validation split.
        shuffle: shuffle the training set every epoch (seeded by `split_seed` and
            the epoch; independent of the number of devices, see GlobalBatchSampler).
        download: download CIFAR with torchvision when it is missing.
        limit_train: use only the first N training samples (for quick runs).
        classes: keep only these classes (train, validation and test), labels
            unchanged: e.g. train on 8 classes and keep the other 2 out of
            distribution (benchmarks/uncertainty.py).
        augment: random crops (padding 4) and horizontal flips of the training
            images, drawn per batch on the device from a stream seeded by
            split_seed, the training step and the rank (exact on resume);
            images only, never validation or test.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        data_dir: Optional[str] = None,
        batch_size: int = 128,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        normalize: bool = False,
        val_size: Union[int, float] = 5000,
        split_seed: int = 0,
        shuffle: bool = True,
        download: bool = True,
        limit_train: Optional[int] = None,
        augment: bool = False,
        classes: Optional[list[int]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_dataset(dataset)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
        if isinstance(val_size, float) and not 0 < val_size < 1:
            raise ConfigError(f"val_size as a fraction must lie in (0, 1); got {val_size}")
        if isinstance(val_size, int) and val_size < 0:
            raise ConfigError(f"val_size must be >= 0; got {val_size}")
        self.dataset = dataset
        self.user_data_dir = data_dir
        self.data_dir = Path(data_dir) if data_dir is not None else Path("data")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.folder: Optional[ImageFolderData] = None
        if uses_image_folder(dataset, data_dir):
            self.folder = image_folder_of(dataset, data_dir)
            self.num_classes = len(self.folder.classes)
            self.image_shape = tuple(self.folder.shape)
            self.input_dim = int(np.prod(self.image_shape))
            if dataset in DATASETS:  # CIFAR's published statistics (equal to the PNG copies')
                self.mean, self.std = DATASETS[dataset][2:4]
            else:
                self.mean, self.std = self.folder.mean_std()
        else:
            self.input_dim, self.num_classes, self.mean, self.std, _ = DATASETS[dataset]
            self.image_shape = tuple(input_shape_of(dataset))
        if classes is not None and (not classes or any(not 0 <= c < self.num_classes for c in classes)):
            raise ConfigError(f"classes must be a non-empty list of labels in 0..{self.num_classes - 1}; got {classes}")
        self.train_set = self.val_set = self.test_set = None
        self.sampler: Optional[GlobalBatchSampler] = None
        self._resume_batch = 0

    # --------------------------------------------------------------- locate
    def locate(self) -> None:
        """Raise one clear error when the data is not on disk and cannot be fetched."""
        if self.folder is not None:
            return
        if self.dataset == "fashion_mnist":
            find_fashion_mnist(self.user_data_dir)
        elif not cifar_present(self.data_dir, self.dataset) and not self.hparams.download:
            raise DataNotFoundError(
                f"{self.dataset} is not in {self.data_dir / CIFAR_LAYOUT[self.dataset][0]} and "
                "download is off; pass --data.download true (needs internet) or "
                "--data.data_dir pointing at the folder that holds "
                f"{CIFAR_LAYOUT[self.dataset][0]}/"
            )

    def check_ready(self, world_size: int = 1, test: bool = True) -> None:
        """Fail before any training work: missing or corrupt files, bad values, a batch
        too large. Loads every split the run will use (the training split, and the
        test split when `test`) when it is on disk; Lightning's later `setup` reuses them.
        """
        self.locate()
        if self.folder is None and self.dataset != "fashion_mnist" and not cifar_present(self.data_dir, self.dataset):
            return  # prepare_data will download it
        self.setup("fit")
        if test:
            self.setup("test")
        GlobalBatchSampler(len(self.train_set), self.batch_size, world_size=world_size)

    def prepare_data(self) -> None:
        if self.folder is not None or self.dataset == "fashion_mnist" or cifar_present(self.data_dir, self.dataset):
            return self.locate()
        self.locate()
        import torchvision

        cls = torchvision.datasets.CIFAR10 if self.dataset == "cifar10" else torchvision.datasets.CIFAR100
        try:
            for train in (True, False):
                cls(str(self.data_dir), train=train, download=True)
        except Exception as exc:  # no network, a proxy, a full disk...
            raise DataNotFoundError(
                f"could not download {self.dataset} into {self.data_dir} ({type(exc).__name__}: {exc}). "
                "Without internet, copy the extracted "
                f"{CIFAR_LAYOUT[self.dataset][0]}/ folder there, or point --data.data_dir at it."
            ) from None

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.folder is not None:
            images = getattr(self.folder, f"{split}_images")
            labels = getattr(self.folder, f"{split}_labels")
        elif self.dataset == "fashion_mnist":
            images, labels = load_fashion_mnist(find_fashion_mnist(self.user_data_dir), split)
        else:
            images, labels = load_cifar(self.data_dir, self.dataset, split)
        x = to_flat_tensor(images, self.mean, self.std, self.hparams.normalize)
        y = torch.from_numpy(labels)
        if x.shape[1] != self.input_dim:
            raise ConfigError(f"{self.dataset} {split} images have {x.shape[1]} values, expected {self.input_dim}")
        if self.folder is None and not torch.isfinite(x).all():
            raise ConfigError(f"the {self.dataset} {split} data contains NaN or inf values; check the files in {self.data_dir}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ConfigError(f"{self.dataset} {split} labels lie outside 0..{self.num_classes - 1}")
        if self.hparams.classes is not None:
            keep = torch.isin(y, torch.tensor(list(self.hparams.classes)))
            x, y = x[keep], y[keep]
        return x, y

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            x, y = self._load("train")
            n = x.shape[0]
            v = self.hparams.val_size
            n_val = int(round(v * n)) if isinstance(v, float) else int(v)
            if n_val >= n:
                raise ConfigError(f"val_size={v} leaves no training data out of {n} samples")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed))
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            if self.hparams.limit_train is not None:
                train_idx = train_idx[: self.hparams.limit_train]
            train_idx = train_idx.sort().values  # shuffling is the sampler's job
            if len(train_idx) < self.batch_size:
                raise ConfigError(
                    f"batch_size={self.batch_size} is larger than the {len(train_idx)} training "
                    "samples, and the last incomplete batch is dropped: lower --data.batch_size"
                )
            self.train_set = TensorDataset(x[train_idx], y[train_idx])
            self.val_set = TensorDataset(x[val_idx], y[val_idx]) if n_val > 0 else None
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = TensorDataset(*self._load("test"))

    # ----------------------------------------------------- exact resume
    # ------------------------------------------------------- augmentation
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if not self.hparams.augment or trainer is None or not trainer.training:
            return batch
        x, y = batch
        gen = torch.Generator(device=x.device).manual_seed(
            (self.hparams.split_seed * 1_000_003 + trainer.global_step) * 1_009 + trainer.global_rank)
        return augment_images(x, self.image_shape, gen), y

    def state_dict(self) -> dict:
        """Saved in checkpoints: how many batches of the current epoch were trained on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # saved at the end of an epoch
            done = 0
        return {"batches_done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        """Resume mid-epoch: the sampler skips the batches already trained on."""
        self._resume_batch = int(state.get("batches_done", 0))

    # ------------------------------------------------------------ loaders
    def _loader(self, ds, batch_size: int) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.sampler = GlobalBatchSampler(
            len(self.train_set), self.batch_size, self.hparams.split_seed, self.hparams.shuffle, rank, world
        )
        if self._resume_batch:
            self.sampler.start_batch, self._resume_batch = self._resume_batch, 0
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self):
        return [] if self.val_set is None else self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
