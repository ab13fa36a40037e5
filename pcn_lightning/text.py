"""Tiny Shakespeare, character by character, for language models.

The corpus (1,115,394 characters, char-rnn's `data/tinyshakespeare/input.txt`, md5
6fb458f1232090904fb40fe944165e91) is read from `--data.data_dir` (the file, or a
folder holding input.txt), or downloaded there from its canonical address when
missing and `download` is on. The vocabulary is the corpus's sorted characters;
the first 90 % is the training split, the last 10 % validation (the customary
split; there is no other test text, so `test` evaluates the validation split).

Batches are contiguous (`windows: streams`, for a stateful model): each split is cut
into `batch_size` parallel streams and every batch holds the next `seq_len`
characters of every stream (inputs) and the characters one step later (targets), so
a stateful model carries its hidden state from one batch to the next. Under DDP,
rank r takes streams r, r + W, ... A model that sees one window at a time (the
transformer) trains on `windows: random`: each batch `batch_size` windows at offsets
drawn afresh every epoch (seeded by the epoch and the batch; under DDP each rank takes
its slice of the global batch), as many batches per epoch as the streams give; validation is always the contiguous streams,
so every validation character is predicted once.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pcn_lightning import seeding
from pcn_lightning.errors import ConfigError, DataNotFoundError

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
MD5 = "6fb458f1232090904fb40fe944165e91"
DEFAULT_DIR = Path("data") / "tinyshakespeare"
CANONICAL_VOCAB = 65  # the corpus's distinct characters


def corpus_path(data_dir: Optional[str]) -> Path:
    d = Path(data_dir) if data_dir is not None else DEFAULT_DIR
    return d if d.suffix == ".txt" else d / "input.txt"


def read_corpus(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc}); point --data.data_dir at the corpus") from None


def vocab_size_of(data_dir: Optional[str]) -> int:
    """Distinct characters of the corpus (for the command line's link to the model)."""
    path = corpus_path(data_dir)
    return len(set(read_corpus(path))) if path.is_file() else CANONICAL_VOCAB


class Streams(Dataset):
    """(inputs, targets) batches of `seq_len` characters from `n_streams` contiguous streams."""

    def __init__(self, ids: torch.Tensor, n_streams: int, seq_len: int, rank: int = 0, world: int = 1) -> None:
        length = (len(ids) - 1) // n_streams
        if length < seq_len + 1:
            raise ConfigError(f"{len(ids)} characters cannot make {n_streams} streams of {seq_len + 1}: "
                              "lower --data.batch_size or --data.seq_len")
        streams = ids[: n_streams * length + 1]
        self.x = torch.stack([streams[i * length: (i + 1) * length] for i in range(n_streams)])[rank::world]
        self.y = torch.stack([streams[i * length + 1: (i + 1) * length + 1] for i in range(n_streams)])[rank::world]
        self.seq_len = seq_len
        self.n = length // seq_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        s = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return self.x[:, s], self.y[:, s]


class RandomWindows(Dataset):
    """`n` global batches of `batch * world` windows of `seq_len` characters at random
    offsets, drawn from a generator seeded by (seed, epoch, i); rank r takes its slice of
    `batch` windows. A run on W devices sees the windows one device sees with the global
    batch, whatever W."""

    def __init__(self, ids: torch.Tensor, batch: int, seq_len: int, n: int, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if len(ids) < seq_len + 1:
            raise ConfigError(f"{len(ids)} characters cannot make windows of {seq_len + 1}: lower --data.seq_len")
        self.ids, self.batch, self.seq_len, self.n, self.seed = ids, batch, seq_len, n, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = seeding.window_generator(self.seed, self.epoch, i)
        start = torch.randint(0, len(self.ids) - self.seq_len, (self.batch * self.world,), generator=g)
        start = start[self.rank * self.batch: (self.rank + 1) * self.batch]
        window = self.ids[start[:, None] + torch.arange(self.seq_len + 1)]
        return window[:, :-1], window[:, 1:]


class RankLocalSampler(DistributedSampler):
    """Batches 0..n-1 in order, of a dataset that is already this rank's share (the streams,
    the windows): a DistributedSampler subclass, so Lightning keeps it instead of wrapping
    the loader in its own (which would split the batches across the ranks a second time).
    It passes the epoch on to the dataset (new random windows every epoch)."""

    def __init__(self, dataset: Dataset, start_batch: int = 0) -> None:
        self.dataset, self.epoch, self.start_batch = dataset, 0, start_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:  # the whole epoch, also when resuming mid-epoch (Lightning counts from its checkpoint)
        return len(self.dataset)

    def __iter__(self):
        start, self.start_batch = self.start_batch, 0  # a skip applies to the resumed epoch only
        return iter(range(start, len(self.dataset)))


class ShakespeareCharDataModule(L.LightningDataModule):
    """Character-level Tiny Shakespeare.

    Args:
        dataset: "shakespeare_char" (fixed; the command line links it to the model).
        data_dir: the corpus file, or a folder holding input.txt (default data/tinyshakespeare).
        batch_size: parallel streams per batch.
        seq_len: characters per stream per batch.
        eval_batch_size: streams of the validation split (default batch_size).
        download: fetch the corpus from its canonical address when it is missing.
        limit_chars: use only the first N characters of the corpus (quick runs, tests).
        windows: "streams" (contiguous training batches, for a stateful model) or
            "random" (training windows at random offsets, for the transformer).
        seed: the random windows' seed.
    """

    def __init__(self, dataset: str = "shakespeare_char", data_dir: Optional[str] = None, batch_size: int = 64,
                 seq_len: int = 64, eval_batch_size: Optional[int] = None, download: bool = True,
                 limit_chars: Optional[int] = None, windows: str = "streams", seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        if windows not in ("streams", "random"):
            raise ConfigError(f"unknown windows {windows!r}; choose 'streams' or 'random'")
        if dataset != "shakespeare_char":
            raise ConfigError(f"ShakespeareCharDataModule reads dataset 'shakespeare_char'; got {dataset!r}")
        for name in ("batch_size", "seq_len"):
            v = getattr(self.hparams, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")
        self.path = corpus_path(data_dir)
        self.vocab: Optional[str] = None
        self.train_ids = self.val_ids = None

    def locate(self) -> None:
        if self.path.is_file():
            return
        if self.hparams.data_dir is not None and not self.path.parent.exists():
            raise DataNotFoundError(f"--data.data_dir {self.hparams.data_dir} does not exist; point it at the corpus "
                                    "(input.txt) or the folder holding it")
        if not self.hparams.download:
            raise DataNotFoundError(f"{self.path} is missing and download is off; put Tiny Shakespeare's input.txt "
                                    f"there (or pass --data.download true to fetch it from {URL})")

    def prepare_data(self) -> None:
        self.locate()
        if self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = urllib.request.urlopen(URL, timeout=30).read()
        except Exception as exc:
            raise DataNotFoundError(f"could not download Tiny Shakespeare from {URL} ({type(exc).__name__}: {exc}); "
                                    f"without internet, copy input.txt to {self.path}") from None
        if hashlib.md5(data).hexdigest() != MD5:
            raise DataNotFoundError(f"the file downloaded from {URL} is not the expected corpus (md5 differs)")
        self.path.write_bytes(data)

    def check_ready(self, world_size: int = 1, test: bool = True) -> None:
        self.locate()
        if self.path.is_file():
            self.setup("fit")

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_ids is not None:
            return
        text = read_corpus(self.path)
        if self.hparams.limit_chars:
            text = text[: self.hparams.limit_chars]
        if len(text) < 100:
            raise ConfigError(f"{self.path} holds {len(text)} characters: too few for a language model")
        self.vocab = "".join(sorted(set(read_corpus(self.path))))
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.long)
        cut = int(len(ids) * 0.9)  # the first 90 % trains, the last 10 % validates
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]

    def _streams(self, ids: torch.Tensor, n: int) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        data = Streams(ids, n, self.hparams.seq_len, rank, world)
        return DataLoader(data, batch_size=None, sampler=RankLocalSampler(data))

    def train_dataloader(self) -> DataLoader:
        streams = self._streams(self.train_ids, self.hparams.batch_size)
        if self.hparams.windows == "streams":
            streams.sampler.start_batch = self._take_resume_batch()
            return streams
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        per_rank = streams.dataset.x.shape[0]  # the global batch split over the ranks, as the streams are
        world = trainer.world_size if trainer is not None else 1
        data = RandomWindows(self.train_ids, per_rank, self.hparams.seq_len, len(streams), self.hparams.seed, rank, world)
        return DataLoader(data, batch_size=None, sampler=RankLocalSampler(data, self._take_resume_batch()))

    def state_dict(self) -> dict:
        """Saved in checkpoints: how many batches of the current epoch were trained on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"batches_done": int(done) if done < trainer.num_training_batches else 0}

    def load_state_dict(self, state: dict) -> None:
        """Resume mid-epoch: the training sampler skips the batches already trained on."""
        self._resume_batch = int(state.get("batches_done", 0))

    def _take_resume_batch(self) -> int:
        start, self._resume_batch = getattr(self, "_resume_batch", 0), 0
        return start

    def val_dataloader(self) -> DataLoader:
        return self._streams(self.val_ids, self.hparams.eval_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
