"""Every bad image folder (and a poisoned CIFAR batch file) ends through train.py with one `error:` line naming the file or folder, before training."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from pcn_lightning import cli
from pcn_lightning.readers import read_cifar_batch
from tests.conftest import REPO, write_image_folder


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


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


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
