"""Resumable, distributed-aware sampling for the two unaligned weak-label streams.

The item drawn at step ``s`` (and its augmentation seed) is a pure function of (seed, stream,
rank, s), so a run resumed at step ``s`` sees exactly the images and augmentations of an
uninterrupted run. Each pass over a folder is a fresh permutation (reshuffled every epoch); with
``world_size`` processes every rank takes its own slice of the global batch, as a
DistributedSampler with ``set_epoch`` would.
"""
import torch
from torch.utils.data import Dataset, Sampler


class StepSampler(Sampler):
    """Yields ``(index, augmentation_seed)`` for steps ``start_step, start_step + 1, ...`` forever."""

    def __init__(self, num_items, batch_size, seed, stream, start_step=1, rank=0, world_size=1):
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self._epoch, self._perm = None, None

    def _permutation(self, epoch):
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stream * 7_919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_items, generator=generator)
        return self._perm

    def __iter__(self):
        step = self.start_step
        while True:
            for slot in range(self.batch_size):
                position = ((step - 1) * self.world_size + self.rank) * self.batch_size + slot
                index = int(self._permutation(position // self.num_items)[position % self.num_items])
                yield index, (self.seed * 1_000_003 + self.stream) * 1_000_000_007 + position
            step += 1


class SeededItems(Dataset):
    """Wraps a dataset so ``dataset[(index, seed)]`` draws its augmentation from ``seed`` alone.

    The global RNG is forked, so loading in the main process leaves the training RNG untouched.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % (2 ** 63))
            return self.dataset[index]
