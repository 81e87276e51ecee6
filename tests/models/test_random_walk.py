"""The random walk of PSA and IRN: scores spread inside a region and stop at a strong boundary."""
import pytest
import torch

from models.random_walk import random_walk, scaled_to_peak, transition_matrix, walk_modes, walks, within_radius


def _two_regions(height=6, width=8, across=0.0):
    """Affinities within radius 2 of a map split into a left and a right half: 1 inside a half,
    ``across`` between the halves."""
    near = within_radius(height, width, 2).float()
    side = (torch.arange(width) >= width // 2).repeat(height)
    same = (side[:, None] == side[None, :]).float()
    return (near * (same + across * (1 - same)))[None]


def test_within_radius_is_symmetric_and_holds_each_position():
    near = within_radius(3, 4, 1)
    assert near.shape == (12, 12) and torch.equal(near, near.T) and near.diagonal().all()
    assert near.sum(1).tolist()[0] == 3  # a corner: itself, right and below


def test_a_seed_spreads_inside_its_region_and_stops_at_a_strong_boundary():
    seed = torch.zeros(1, 1, 6, 8)
    seed[0, 0, 2, 1] = 1.0  # one confident lesion position in the left half
    walked = random_walk(seed, _two_regions(across=0.0), beta=1, steps=40)[0, 0]
    left, right = walked[:, :4], walked[:, 4:]
    assert (left > 0).all(), 'the score did not reach every position of its region'
    assert torch.count_nonzero(right) == 0, 'the score crossed a zero-affinity boundary'
    # A weak boundary lets some through, but the seed's side keeps most of it.
    leaky = random_walk(seed, _two_regions(across=0.1), beta=1, steps=10)[0, 0]
    assert (leaky[:, 4:] > 0).any() and leaky[:, :4].mean() > 2 * leaky[:, 4:].mean()


def test_beta_sharpens_weak_affinities_away():
    seed = torch.zeros(1, 1, 6, 8)
    seed[0, 0, 2, 1] = 1.0
    soft = random_walk(seed, _two_regions(across=0.3), beta=1, steps=20)[0, 0]
    sharp = random_walk(seed, _two_regions(across=0.3), beta=8, steps=20)[0, 0]
    assert sharp[:, 4:].sum() < soft[:, 4:].sum()


def test_a_constant_map_stays_constant():
    flat = torch.full((2, 3, 5, 5), 0.4)
    noise = torch.rand(2, 25, 25, generator=torch.Generator().manual_seed(0))
    affinity = within_radius(5, 5, 2).float()[None] * noise
    affinity = (affinity + affinity.transpose(1, 2)) / 2 + torch.eye(25)
    assert torch.allclose(random_walk(flat, affinity, beta=2, steps=5), flat, atol=1e-6)
    assert torch.allclose(transition_matrix(affinity, 2).sum(1), torch.ones(2, 25))


def test_affinity_of_the_wrong_size_is_one_clear_error():
    with pytest.raises(ValueError, match='does not match maps'):
        random_walk(torch.zeros(1, 1, 4, 4), torch.ones(1, 15, 15))


def test_walks_of_several_lengths_are_the_snapshots_of_one_walk():
    seed = torch.zeros(1, 1, 6, 8)
    seed[0, 0, 2, 1] = 1.0
    affinity = _two_regions(across=0.2)
    walked = walks(seed, affinity, beta=2, lengths=(0, 3, 12))
    assert sorted(walked) == [0, 3, 12] and torch.equal(walked[0], seed)
    for steps in (3, 12):
        torch.testing.assert_close(walked[steps], random_walk(seed, affinity, beta=2, steps=steps))
    assert walked[12][0, 0, :, 4:].sum() > walked[3][0, 0, :, 4:].sum()  # longer walks spread further


def test_walk_modes_name_the_shorter_walks_and_the_method_s_own():
    assert walk_modes('psa', 256) == {'psa-t4': 4, 'psa-t16': 16, 'psa-t64': 64, 'psa': 256}
    assert walk_modes('irn', 8) == {'irn-t4': 4, 'irn-t16': 8, 'irn-t64': 8, 'irn': 8}


def test_scaled_to_peak_puts_each_image_s_maximum_at_one():
    maps = torch.tensor([[[0.0, 0.2], [0.1, 0.4]], [[0.0, 0.0], [0.0, 0.0]]])
    scaled = scaled_to_peak(maps)
    torch.testing.assert_close(scaled[0], maps[0] / 0.4)
    assert torch.equal(scaled[1], maps[1])
