"""Data: CIFAR in its real on-disk format, Fashion-MNIST found offline, clear errors."""

import numpy as np
import pytest
import torch

from pcn_lightning import data as data_mod, readers
from pcn_lightning.data import PCNDataModule
from pcn_lightning.errors import ConfigError, DataNotFoundError
from tests.conftest import make_cifar


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_from_real_format(tmp_path, name, classes):
    root = make_cifar(tmp_path, name)
    dm = PCNDataModule(name, data_dir=str(root), batch_size=8, val_size=10, download=False)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32  # images stay images
    assert 0.0 <= x.min() and x.max() <= 1.0
    n_train = 100
    assert len(dm.train_set) + len(dm.val_set) == n_train
    assert len(dm.test_set) == 20
    # labels are exactly those in the pickles (fine labels for CIFAR-100), pixels too
    images, labels = readers.load_cifar(root, name, "test")
    assert torch.equal(dm.test_set.tensors[1], torch.from_numpy(labels))
    assert torch.allclose(dm.test_set.tensors[0][0], torch.from_numpy(images[0] / 255.0).float())
    if name == "cifar100":
        import pickle
        with open(root / "cifar-100-python" / "test", "rb") as fh:
            raw = pickle.load(fh, encoding="bytes")
        assert labels.tolist() == raw[b"fine_labels"]
        assert max(labels) >= 20  # fine (0..99), not coarse (0..19)
    assert dm.num_classes == classes and dm.input_dim == 3072


def test_cifar_normalization(tmp_path):
    root = make_cifar(tmp_path, "cifar10")
    raw = PCNDataModule("cifar10", data_dir=str(root), val_size=0, batch_size=4, download=False)
    norm = PCNDataModule("cifar10", data_dir=str(root), val_size=0, batch_size=4, download=False, normalize=True)
    raw.setup("fit"), norm.setup("fit")
    xr, xn = raw.train_set.tensors[0], norm.train_set.tensors[0]
    mean = torch.tensor(data_mod.DATASETS["cifar10"][2]).view(1, 3, 1, 1)
    std = torch.tensor(data_mod.DATASETS["cifar10"][3]).view(1, 3, 1, 1)
    assert torch.allclose(xn, (xr - mean) / std, atol=1e-5)
    assert xn.min() < 0


def test_cifar_missing_offline(tmp_path):
    dm = PCNDataModule("cifar10", data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError, match="data_dir"):
        dm.locate()


def test_fashion_mnist_found_in_debian_style_folder(fmnist_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", fmnist_dir)
    dm = PCNDataModule("fashion_mnist", batch_size=16, val_size=100)  # no data_dir: Debian's folder
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 500 and len(dm.val_set) == 100 and len(dm.test_set) == 200
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and y.dtype == torch.int64


def test_fashion_mnist_from_data_dir(fmnist_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    dm = PCNDataModule("fashion_mnist", data_dir=str(fmnist_dir), batch_size=16, val_size=0.1)
    dm.setup("fit")
    assert len(dm.val_set) == 60


def test_fashion_mnist_missing_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    dm = PCNDataModule("fashion_mnist")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist.*--data.data_dir"):
        dm.prepare_data()


def test_split_is_fixed_by_seed(fmnist_dir):
    a = PCNDataModule("fashion_mnist", data_dir=str(fmnist_dir), val_size=50)
    b = PCNDataModule("fashion_mnist", data_dir=str(fmnist_dir), val_size=50)
    a.setup("fit"), b.setup("fit")
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])


def test_batch_larger_than_train_split(fmnist_dir):
    dm = PCNDataModule("fashion_mnist", data_dir=str(fmnist_dir), val_size=100, batch_size=1000)
    with pytest.raises(ConfigError, match="batch_size"):
        dm.setup("fit")


def test_idx_roundtrip(tmp_path):
    from tests.conftest import write_idx
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(readers.read_idx(tmp_path / "a.gz"), arr)


def test_cifar_augmentation_is_a_crop_and_flip_seeded_and_train_only():
    from pcn_lightning.sampling import augment_images

    g = lambda: torch.Generator().manual_seed(3)
    x = torch.rand(6, 3 * 8 * 8)
    a, b = augment_images(x, (3, 8, 8), g(), pad=2), augment_images(x, (3, 8, 8), g(), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    img, out = x.view(6, 3, 8, 8), a.view(6, 3, 8, 8)
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    for i in range(6):  # every output is one crop of the padded image or of its mirror
        crops = [p[:, r:r + 8, c:c + 8] for p in (padded[i], padded[i].flip(2)) for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], c) for c in crops)
    assert not torch.equal(a, x)
