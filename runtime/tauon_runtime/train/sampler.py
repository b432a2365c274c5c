"""Shards each epoch's shuffled order across processes, in batches, resumable mid-epoch."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Like DistributedSampler + BatchSampler, plus `skip` to resume inside an epoch.

    Every process draws the same permutation (seeded by seed + epoch), pads it to a multiple of
    the world size with its first few indices, and takes every world_size-th one: the data is
    sharded, not repeated. Incomplete last batches are dropped when a full one exists, so every
    process runs the same number of steps (DDP needs that) and BatchNorm never sees one sample.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch `epoch`, leaving out the `skip` batches already trained on."""
        self.epoch, self.skip = epoch, skip

    @property
    def per_rank(self) -> int:
        return -(-self.num_samples // self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        full = self.per_rank // self.batch_size
        return full if full > 0 else 1

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        padded = self.per_rank * self.world_size
        order = (order * (padded // self.num_samples + 1))[:padded]
        mine = order[self.rank :: self.world_size]
        for b in range(self.skip, self.batches_per_epoch):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]
