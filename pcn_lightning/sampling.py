"""What a training batch goes through before the model: images as float tensors
(standardized per channel), random crops and flips, and the order of the batches
(one seeded permutation cut into global batches, the same for any number of devices)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from pcn_lightning import seeding
from pcn_lightning.errors import ConfigError


def to_image_tensor(images: np.ndarray, mean, std, normalize: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W) in [0, 1], or standardized per channel:
    images stay images from the files to the first map (a flat map flattens its input itself)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if normalize:
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        x = (x - m) / s
    return x.contiguous()


def augment_images(x: torch.Tensor, shape: tuple, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per sample.

    x is (B, C, H, W) (or flat, (B, C*H*W)); returned in the same layout."""
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
        return torch.randperm(self.n, generator=seeding.order_generator(self.seed, self.epoch))

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
