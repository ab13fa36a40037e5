"""Every random stream of a run, derived from the module's seed in one place.

    derive(seed, *keys)   a reproducible integer seed for a stream
    TRAIN  (step, rank)          latents of a training step
    LABEL_FREE (step, rank, 1)   the label-free settle of a training step
    EVAL  (per sample)           latents at evaluation: one stream per sample,
                                 keyed by the sample's content, so a prediction
                                 never depends on which samples share its batch
    split                        the train/validation split (`split_generator`)
    order (epoch)                the training set's permutation (`order_generator`)
    augment (step, rank)         a batch's crops and flips (`augment_generator`)
    windows (epoch, index)       the text windows of one batch (`window_generator`)
    dropout (step, rank)         a batch's dropout masks (`dropout_generator`)
    nudge (step or epoch)        the centred nudge's sign (`nudge_generator`)

The data's streams keep the formulas they were recorded with (the regression
references depend on them), so they are spelled out here rather than through `derive`.
"""

from __future__ import annotations

import zlib

import torch

_MODULUS = 2**63 - 1
_MULTIPLIER = 1_000_003
EVAL_STREAM = 2
CLASS_STREAM = 3


def derive(seed: int, *keys: int) -> int:
    """A seed from a base seed and any number of integer keys."""
    s = int(seed)
    for k in keys:
        s = (s * _MULTIPLIER + int(k)) % _MODULUS
    return s


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator for the stream (seed, *keys)."""
    return torch.Generator().manual_seed(derive(seed, *keys))


def training_generator(seed: int, step: int, rank: int, *keys: int) -> torch.Generator:
    return generator(seed, step, rank, *keys)


def sample_seeds(seed: int, x: torch.Tensor, *keys: int) -> list[int]:
    """One seed per sample of `x`, from its bytes (CRC-32): the same image always
    gets the same random latents, whatever batch it sits in."""
    rows = x.detach().reshape(x.shape[0], -1).cpu().contiguous().numpy()
    return [derive(seed, EVAL_STREAM, *keys, zlib.crc32(r.tobytes())) for r in rows]


def split_generator(split_seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(split_seed))


def order_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def augment_generator(seed: int, step: int, rank: int, device=None) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + int(step)) * 1_009 + int(rank))


def window_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) * 1_000_003 + int(index))


def dropout_generator(seed: int, step: int, rank: int, device=None) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + int(step)) * 65_537 + int(rank))


NUDGE_STREAM = 4


def nudge_generator(seed: int, key: int) -> torch.Generator:
    return generator(seed, NUDGE_STREAM, key)
