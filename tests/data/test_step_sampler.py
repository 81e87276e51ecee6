"""Tests for data/step_sampler.py: deterministic, resumable, per-epoch permutations, rank slicing."""
import itertools

import pytest
import torch
from torch.utils.data import Dataset

from data.step_sampler import SeededItems, StepSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_same_arguments_give_the_same_stream():
    assert take(StepSampler(7, 2, seed=3, stream=0), 40) == take(StepSampler(7, 2, seed=3, stream=0), 40)


def test_seed_and_stream_change_the_stream():
    base = take(StepSampler(7, 2, seed=3, stream=0), 14)
    assert take(StepSampler(7, 2, seed=4, stream=0), 14) != base
    assert take(StepSampler(7, 2, seed=3, stream=1), 14) != base
    # Every item of the stream has its own augmentation seed.
    assert len({seed for _, seed in take(StepSampler(7, 2, seed=3, stream=0), 100)}) == 100


@pytest.mark.parametrize('start_step', [2, 5, 11])
@pytest.mark.parametrize('batch_size', [1, 3])
def test_resuming_at_a_step_reproduces_the_tail_of_an_uninterrupted_stream(start_step, batch_size):
    full = take(StepSampler(5, batch_size, seed=0, stream=1), 60)
    resumed = take(StepSampler(5, batch_size, seed=0, stream=1, start_step=start_step), 20)
    skip = (start_step - 1) * batch_size
    assert resumed == full[skip:skip + 20]


@pytest.mark.parametrize('batch_size', [1, 2, 4])
def test_each_epoch_is_a_fresh_permutation(batch_size):
    n = 6
    indices = [index for index, _ in take(StepSampler(n, batch_size, seed=0, stream=0), 5 * n)]
    epochs = [indices[i:i + n] for i in range(0, 5 * n, n)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled, not the same order each epoch


@pytest.mark.parametrize('batch_size', [1, 3])
def test_two_ranks_together_cover_one_rank_with_double_batch(batch_size):
    steps = 7
    ranks = [take(StepSampler(5, batch_size, seed=2, stream=0, rank=r, world_size=2), steps * batch_size)
             for r in range(2)]
    single = take(StepSampler(5, 2 * batch_size, seed=2, stream=0), steps * 2 * batch_size)
    for step in range(steps):
        per_rank = [rank[step * batch_size:(step + 1) * batch_size] for rank in ranks]
        assert per_rank[0] + per_rank[1] == single[step * 2 * batch_size:(step + 1) * 2 * batch_size]
    assert not set(ranks[0]) & set(ranks[1])  # no item drawn by both ranks at once


class _RandomItems(Dataset):
    """Each item is a draw from the global torch RNG (like an augmentation)."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index + torch.rand(3)


def test_seeded_items_depend_only_on_the_seed_and_leave_the_global_rng_alone():
    items = SeededItems(_RandomItems())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = items[(2, 12345)]
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(99)
    assert torch.equal(items[(2, 12345)], first)
    assert not torch.equal(items[(2, 12346)], first)
    assert len(items) == 4
    # Seeds beyond 2**63 (long runs, many ranks) are folded into torch's range.
    assert items[(0, 2 ** 64 + 5)].shape == (3,)
