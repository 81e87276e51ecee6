"""Tests for refinement/gated_crf.py: a gated image keeps its empty mask, the CRF refines the others, in order."""
import numpy as np
import pytest
from PIL import Image

from refinement.gated_crf import refine_ungated


def _refiner(calls):
    """A stand-in CRF: records the pairs it is given (one list per call) and returns all-True masks."""
    def refine(todo):
        calls.append(list(todo))
        return [np.ones(prob.shape, bool) for _, prob in todo]
    return refine


def test_gated_arrays_stay_empty_and_never_reach_the_crf():
    probs = [np.full((2, 3), 0.9, np.float32), np.full((4, 5), 0.9, np.float32), np.full((3, 3), 0.9, np.float32)]
    pairs = [(f'raw{i}', prob) for i, prob in enumerate(probs)]
    calls = []
    masks = refine_ungated(pairs, [False, True, False], _refiner(calls))
    assert calls == [[pairs[0], pairs[2]]]  # one call, the ungated ones in order
    assert [m.shape for m in masks] == [(2, 3), (4, 5), (3, 3)]
    assert [m.dtype for m in masks] == [bool] * 3
    assert masks[0].all() and not masks[1].any() and masks[2].all()


def test_gated_map_files_get_an_empty_mask_of_their_size(tmp_path):
    paths = []
    for i, size in enumerate(((6, 4), (3, 5))):
        paths.append(str(tmp_path / f'prob{i}.png'))
        Image.fromarray(np.full(size, 60000, np.uint16)).save(paths[-1])
    calls = []
    masks = refine_ungated([('img0', paths[0]), ('img1', paths[1])], [True, True], _refiner(calls))
    assert calls == [[]]
    assert [(m.shape, m.any()) for m in masks] == [((6, 4), False), ((3, 5), False)]


def test_flags_must_match_the_images():
    with pytest.raises(ValueError, match='2 images but 1 gate flags'):
        refine_ungated([('a', np.zeros(2)), ('b', np.zeros(2))], [False], _refiner([]))
