"""Tests for reporting/sample_grid.py: the tiles of a sample grid, and the names above its columns."""
import numpy as np
import torch

from reporting.sample_grid import LABEL_BAND_PX, LABEL_COLOUR, image_grid, labelled_grid


def visuals(side):
    """Three visuals of one flat grey each (uint8 grey values 0, 128, 191 in the grid)."""
    return {'real_A': torch.full((2, 3, side, side), -1.0), 'lesion_map': torch.zeros(2, 1, side, side),
            'composite_B': torch.full((2, 3, side, side), 0.5)}


def runs(flags):
    """[start, stop) of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def assert_one_name_centred_over_each_tile(grid, tile_centres):
    """The band's text (dark pixels) falls in one piece per tile (letters less than 4 px apart), centred
    over it: the names never run into each other."""
    text = (grid[:LABEL_BAND_PX] < 128).any(axis=2).any(axis=0)
    names = runs(np.convolve(text, np.ones(4), 'full')[:len(text)] > 0)  # a dark pixel darkens the next 3
    assert len(names) == len(tile_centres), names
    for (start, stop), centre in zip(names, tile_centres):
        assert abs((start + stop - 3) / 2 - centre) <= 2, (start, stop, centre)


def test_image_grid_puts_the_tiles_side_by_side():
    grid = image_grid(visuals(16))
    assert grid.shape == (20, 3 * 20, 3) and grid.dtype == np.uint8
    assert [tuple(grid[10, 20 * i + 10]) for i in range(3)] == [(0, 0, 0), (128, 128, 128), (191, 191, 191)]


def test_wide_tiles_keep_their_places_under_a_band_of_names():
    grid = labelled_grid(visuals(96))
    assert grid.shape == (LABEL_BAND_PX + 100, 3 * 100, 3)
    assert np.array_equal(grid[LABEL_BAND_PX:], image_grid(visuals(96)))
    assert_one_name_centred_over_each_tile(grid, [50, 150, 250])
    assert (grid[:LABEL_BAND_PX] == LABEL_COLOUR).all(axis=2).any()


def test_narrow_columns_are_widened_to_fit_their_names():
    grid = labelled_grid(visuals(8))
    tiles = runs(~(grid[LABEL_BAND_PX + 6] == 255).all(axis=1))  # the tiles' pixels on one row
    assert [stop - start for start, stop in tiles] == [8, 8, 8]
    assert grid.shape[1] > 3 * 12  # wider than the tiles alone
    assert_one_name_centred_over_each_tile(grid, [(start + stop) / 2 for start, stop in tiles])
