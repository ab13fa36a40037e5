"""Data: CIFAR-10, CIFAR-100, Fashion-MNIST and any image folder, as images (N, C, H, W).

The readers (`readers`) parse the datasets' real on-disk formats themselves (CIFAR's
pickled batches, read by an unpickler that admits only what a batch holds; MNIST-style
idx files, gzipped or not; folders of PNG/JPEG images, see `image_folder`), so no
integrity check stands in the way of the Debian package or of small fixtures in
the same format. torchvision is used only to download CIFAR on a machine that has
a network. CIFAR given as an image folder (train/<class>/*.png, test/<class>/*.png)
is checked against the official class names, whose sorted order is the label order.
Standardizing, augmenting and ordering the batches: `sampling`. Here: the dataset
facts (shape, classes, statistics) and the DataModule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from pcn_lightning import seeding
from pcn_lightning.errors import ConfigError, DataNotFoundError
from pcn_lightning.image_folder import ImageFolderData, is_image_folder, load_image_folder
from pcn_lightning.readers import CIFAR_LAYOUT, cifar_present, find_fashion_mnist, load_cifar, load_fashion_mnist
from pcn_lightning.sampling import GlobalBatchSampler, augment_images, to_image_tensor

DATASETS = {
    # name: (input_dim, num_classes, per-channel mean, per-channel std, channels)
    "cifar10": (3072, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 3),
    "cifar100": (3072, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 3),
    "fashion_mnist": (784, 10, (0.2860,), (0.3530,), 1),
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
class PCNDataModule(L.LightningDataModule):
    """CIFAR-10, CIFAR-100, Fashion-MNIST or an image folder, as images, held in memory.

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
        x = to_image_tensor(images, self.mean, self.std, self.hparams.normalize)
        y = torch.from_numpy(labels)
        if x[0].numel() != self.input_dim:
            raise ConfigError(f"{self.dataset} {split} images have {x[0].numel()} values, expected {self.input_dim}")
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
            perm = torch.randperm(n, generator=seeding.split_generator(self.hparams.split_seed))
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
        gen = seeding.augment_generator(self.hparams.split_seed, trainer.global_step, trainer.global_rank, x.device)
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
