"""Image folders (train/<class>/*.png, test/<class>/*.png): label order, shapes, the
decode cache and its invalidation, conversions, and every bad input through train.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pcn_lightning import image_folder as imf
from pcn_lightning.data import CIFAR10_CLASSES, PCNDataModule
from pcn_lightning.errors import ConfigError
from tests.conftest import make_cifar_folder, write_image_folder


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch, tmp_path):
    monkeypatch.setattr(imf, "_MEMO", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_labels_follow_sorted_class_folders_and_shapes(tmp_path):
    data = imf.load_image_folder(write_image_folder(tmp_path / "d"))
    assert data.classes == ["a_dog", "b_cat", "c_eel"]
    assert data.train_images.shape == (9, 3, 5, 6) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (6, 3, 5, 6)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.shape == [3, 5, 6]
    # the pixels are the file's, channel-first
    first = np.asarray(Image.open(tmp_path / "d" / "train" / "a_dog" / "0.png")).transpose(2, 0, 1)
    assert np.array_equal(data.train_images[0], first)
    mean, std = data.mean_std()
    x = data.train_images.astype(np.float64) / 255
    assert np.allclose(mean, x.mean(axis=(0, 2, 3))) and np.allclose(std, x.std(axis=(0, 2, 3)))


def test_cache_is_reused_and_invalidated_when_the_folder_changes(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d")
    first = imf.load_image_folder(root)
    assert list((root / ".pcn_cache").glob("*.npz"))
    calls = []
    real = imf.decode
    monkeypatch.setattr(imf, "decode", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(imf, "_MEMO", {})
    again = imf.load_image_folder(root)
    assert calls == [] and np.array_equal(again.train_images, first.train_images)
    # a changed image: decoded anew, the stale cache dropped
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(root / "train" / "a_dog" / "0.png")
    os.utime(root / "train" / "a_dog" / "0.png", ns=(1, 1))
    monkeypatch.setattr(imf, "_MEMO", {})
    changed = imf.load_image_folder(root)
    assert calls == [1] and changed.train_images[0].sum() == 0
    assert len(list((root / ".pcn_cache").glob("*.npz"))) == 1


def test_read_only_folder_caches_in_home(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d")
    real_mkdir = imf.Path.mkdir

    def refuse(self, *a, **k):
        if self.name == ".pcn_cache":
            raise PermissionError("read-only")
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(imf.Path, "mkdir", refuse)
    imf.load_image_folder(root)
    assert list((tmp_path / "home" / ".cache" / "pcn_lightning").glob("*.npz"))


def test_grayscale_and_rgba_are_converted_and_said_once(tmp_path, capsys):
    root = write_image_folder(tmp_path / "d")
    write_image_folder(tmp_path / "gray", mode="L")
    Image.fromarray(np.full((5, 6), 200, np.uint8), "L").save(root / "train" / "a_dog" / "9.png")
    Image.fromarray(np.full((5, 6, 4), 100, np.uint8), "RGBA").save(root / "test" / "b_cat" / "9.png")
    data = imf.load_image_folder(root)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "1 L" in err and "1 RGBA" in err and "to RGB" in err
    gray = next(i for i in range(len(data.train_labels)) if data.train_images[i].min() == 200)
    assert (data.train_images[gray] == 200).all()  # gray replicated into R, G, B
    only_gray = imf.load_image_folder(tmp_path / "gray")
    assert only_gray.shape == [1, 5, 6]  # an all-grayscale folder stays one channel


def test_jpeg_is_read(tmp_path):
    data = imf.load_image_folder(write_image_folder(tmp_path / "d", ext="jpg"))
    assert data.train_images.shape == (9, 3, 5, 6)


def test_cifar_folder_with_other_classes_is_refused(tmp_path):
    root = make_cifar_folder(tmp_path / "c", [c for c in CIFAR10_CLASSES if c != "cat"] + ["kitten"])
    with pytest.raises(ConfigError, match="does not hold cifar10's classes.*missing: \\['cat'\\]"):
        PCNDataModule("cifar10", str(root))


