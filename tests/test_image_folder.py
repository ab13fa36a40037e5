"""Image folders (train/<class>/*.png, test/<class>/*.png): label order, shapes, the
decode cache and its invalidation, conversions, and every bad input through train.py."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from pcn_lightning import cli
from pcn_lightning import image_folder as imf
from pcn_lightning.data import CIFAR10_CLASSES, PCNDataModule, read_cifar_batch
from pcn_lightning.errors import ConfigError
from tests.conftest import REPO, write_image_folder


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


def test_image_folder_trains_through_train_py(tmp_path, monkeypatch, capsys):
    """dataset image_folder: shape, classes and normalization from the data; a few batches, then test."""
    root = write_image_folder(tmp_path / "d", n=(40, 6), size=(8, 8))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.dataset", "image_folder",
                   "--data.data_dir", str(root), "--data.val_size", "12", "--data.batch_size", "16",
                   "--data.normalize", "true", "--model.init_args.dims", "[192, 32, 3]",
                   "--trainer.enable_progress_bar", "false"])
    assert rc == 0, capsys.readouterr().err
    from benchmarks.run_report import report

    row = report(tmp_path / "logs")  # what benchmarks/CIFAR.md's rows are read with
    assert row["model"] == "PCNModule" and row["epochs"] == 0 and len(row["val_top1"]) == 1
    assert 0 <= row["test_top1"] <= 1 and row["test_top5"] is None  # top-5 from ten classes on
    dm = PCNDataModule("image_folder", str(root), batch_size=16, val_size=12)
    assert dm.num_classes == 3 and dm.image_shape == (3, 8, 8)
    assert np.allclose(dm.mean, imf.load_image_folder(root).mean_std()[0])


def make_cifar_folder(root, classes, n=(2, 1)):
    return write_image_folder(root, classes=classes, n=n, size=(32, 32))


@pytest.mark.parametrize("config", ["cifar10_small", "cifar100_small"])
def test_shipped_cifar_configs_train_on_an_image_folder(config, tmp_path, monkeypatch, capsys):
    from pcn_lightning.data import CIFAR100_CLASSES

    classes = CIFAR10_CLASSES if config.startswith("cifar10_") else CIFAR100_CLASSES
    root = make_cifar_folder(tmp_path / "cifar", classes, n=(4 if len(classes) == 10 else 1, 1))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / f"configs/{config}.yaml"), "--data.data_dir", str(root),
                   "--data.val_size", "10", "--data.batch_size", "8", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
                   "--trainer.enable_model_summary", "false"])
    assert rc == 0, capsys.readouterr().err
    assert list(tmp_path.rglob("best-*.ckpt"))


def test_cifar_folder_with_other_classes_is_refused(tmp_path):
    root = make_cifar_folder(tmp_path / "c", [c for c in CIFAR10_CLASSES if c != "cat"] + ["kitten"])
    with pytest.raises(ConfigError, match="does not hold cifar10's classes.*missing: \\['cat'\\]"):
        PCNDataModule("cifar10", str(root))


def _bad(kind, root):
    """Make `root` (a good folder) bad in one way; return a fragment the error must name."""
    if kind == "truncated":
        p = root / "train" / "a_dog" / "1.png"
        p.write_bytes(p.read_bytes()[:40])
        return str(p)
    if kind == "not_an_image":
        (root / "train" / "a_dog" / "notes.txt").write_text("hello")
        return "notes.txt is not an image"
    if kind == "image_extension_not_an_image":
        (root / "test" / "b_cat" / "x.png").write_text("not png bytes")
        return "x.png cannot be decoded"
    if kind == "empty_class":
        (root / "train" / "d_fox").mkdir()
        (root / "test" / "d_fox").mkdir()
        return "d_fox is an empty class folder"
    if kind == "different_classes":
        d = root / "test" / "c_eel"
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        return "different classes"
    if kind == "different_sizes":
        Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(root / "test" / "c_eel" / "0.png")
        return "images of different sizes"
    if kind == "missing_split":
        import shutil
        shutil.rmtree(root / "test")
        return "has no test/ folder"
    if kind == "symlink_loop":
        os.symlink(root / "train" / "a_dog" / "loop.png", root / "train" / "a_dog" / "loop.png")
        return "loop.png"
    if kind == "non_utf8_name":
        os.mkdir(os.path.join(os.fsencode(root / "train"), b"caf\xe9"))
        return "not valid UTF-8"
    if kind == "file_among_classes":
        (root / "train" / "stray.png").write_bytes(b"x")
        return "should hold only class folders"
    raise AssertionError(kind)


BAD = ["truncated", "not_an_image", "image_extension_not_an_image", "empty_class", "different_classes",
       "different_sizes", "missing_split", "symlink_loop", "non_utf8_name", "file_among_classes"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_image_folder_one_clear_error_through_train_py(kind, tmp_path, monkeypatch, capsys):
    root = write_image_folder(tmp_path / "d")
    fragment = _bad(kind, root)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.dataset", "image_folder",
                   "--data.data_dir", str(root), "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "logs").exists()


def test_image_folder_without_data_dir_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.dataset", "image_folder"])
    assert rc == 2 and "needs --data.data_dir" in capsys.readouterr().err


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_poisoned_cifar_batch_is_refused_and_runs_nothing(tmp_path, monkeypatch, capsys):
    """CIFAR's pickled batches are read by an unpickler that admits only data."""
    from tests.conftest import make_cifar

    monkeypatch.chdir(tmp_path)
    root = make_cifar(tmp_path / "data", "cifar10")
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    entry = read_cifar_batch(batch)  # a real batch reads
    assert entry[b"data"].shape == (20, 3072)
    entry[b"extra"] = RunsCode()
    batch.write_bytes(pickle.dumps(entry))
    rc = cli.main(["--config", str(REPO / "configs/smoke.yaml"), "--data.dataset", "cifar10",
                   "--data.data_dir", str(root), "--model.init_args.dims", "[3072, 16, 10]"])
    err = capsys.readouterr().err
    assert rc == 2 and "data_batch_3" in err and "refused" in err, err
    assert not (tmp_path / "pwned").exists()
