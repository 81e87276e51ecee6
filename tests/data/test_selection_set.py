"""Tests for data/selection_set.py: the images test.py and crf.py choose on, in order."""
import os

import numpy as np
import pytest
from PIL import Image

from data.layout import LayoutError, check_split
from data.selection_set import SelectionSet, selection_set


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def _dataset(root):
    """A folder with val (b, a), few_sample/f1 (f2, f1, each labelled), 1_A_weak and 5_B_weak (P1 x2, P2 x2, P3)."""
    for name in ('b', 'a'):
        _png(root / 'val' / 'images' / f'{name}.png')
        _png(root / 'val' / 'labels' / f'{name}_segmentation.png', 255)
    for name in ('f2', 'f1'):
        _png(root / 'few_sample' / 'f1' / 'A' / f'{name}.png')
        _png(root / 'few_sample' / 'f1' / 'B' / f'{name}_segmentation.png', 255)
    for name in ('P1_0', 'P1_1', 'P2_0', 'P2_1', 'P3_0'):
        _png(root / '5_B_weak' / f'{name}.png')
    _png(root / '1_A_weak' / 'L0.png')
    return str(root)


def _names(pairs):
    return [(os.path.basename(image), label and os.path.basename(label)) for image, label in pairs]


def test_val_alone_is_val_in_order(tmp_path):
    folder = _dataset(tmp_path)
    val = check_split(folder, 'val').pairs
    chosen_on = selection_set(folder, val)
    assert chosen_on == SelectionSet(val, [])
    assert _names(chosen_on.pairs()) == [('a.png', 'a_segmentation.png'), ('b.png', 'b_segmentation.png')]
    assert selection_set(folder, val, None).pairs() == val  # a record without select_few


def test_few_shot_follows_val_with_labels(tmp_path):
    folder = _dataset(tmp_path)
    chosen_on = selection_set(folder, check_split(folder, 'val').pairs, 'f1')
    assert _names(chosen_on.pairs()) == [('a.png', 'a_segmentation.png'), ('b.png', 'b_segmentation.png'),
                                         ('f1.png', 'f1_segmentation.png'), ('f2.png', 'f2_segmentation.png')]
    with pytest.raises(SystemExit, match='few_sample/f9/A'):
        selection_set(folder, [], 'f9')


def test_held_out_normals_by_count_and_by_group_come_last_without_label(tmp_path):
    folder = _dataset(tmp_path)
    val = check_split(folder, 'val').pairs
    by_count = selection_set(folder, val, 'f1', hold_out_normals=2)
    assert [os.path.basename(p) for p in by_count.normals] == ['P2_1.png', 'P3_0.png']
    assert _names(by_count.pairs())[4:] == [('P2_1.png', None), ('P3_0.png', None)]
    assert len(by_count.labelled) == 4
    # By patient: P3 alone is one image, so P2 joins it; both of P2's slices are held out.
    by_group = selection_set(folder, val, '', hold_out_normals=2, hold_out_group=r'^(P\d+)_')
    assert _names(by_group.pairs()) == _names(val) + [('P2_0.png', None), ('P2_1.png', None), ('P3_0.png', None)]
    with pytest.raises(LayoutError, match='does not match --hold_out_group'):
        selection_set(folder, val, hold_out_normals=1, hold_out_group=r'^(Q\d+)_')
