"""Tests for data/layout.py: every problem is found, named with its path, and reported at once."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from data.layout import (LayoutError, SplitFiles, TrainingFiles, check_split, check_training_layout,
                         find_weak_folders, held_out_normals, hold_out_spec, label_path_for)


def _png(path, size=(8, 8), value=100):
    """Write a tiny gray PNG of (W, H) ``size``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)
    return path


def _training_tree(root, n=2):
    """<root>/ds/f1 with two weak folders of ``n`` images each; returns the folder path."""
    folder = root / 'ds' / 'f1'
    for side in ('A', 'B'):
        for i in range(n):
            _png(folder / f'{n}_{side}_weak' / f'{side}{i}.png')
    return folder


def _split_tree(folder, split='val', names=('a', 'b')):
    for name in names:
        _png(folder / split / 'images' / f'{name}.png')
        _png(folder / split / 'labels' / f'{name}_segmentation.png', value=255)


def test_training_layout_ok_and_unpacks(tmp_path):
    folder = _training_tree(tmp_path)
    result = check_training_layout(tmp_path, 'ds', 'f1')
    assert isinstance(result, TrainingFiles) and result.skipped == []
    dir_A, dir_B = result
    assert dir_A == str(folder / '2_A_weak') and dir_B == str(folder / '2_B_weak')
    assert [os.path.basename(p) for p in result.paths_B] == ['B0.png', 'B1.png']


def test_missing_dataroot_suggests_flag(tmp_path):
    with pytest.raises(LayoutError, match='--dataroot') as info:
        check_training_layout(tmp_path / 'nowhere', 'ds', 'f1')
    assert str(tmp_path / 'nowhere') in str(info.value)


def test_unknown_dataset_lists_existing_ones(tmp_path):
    _training_tree(tmp_path)
    (tmp_path / 'Other').mkdir()
    (tmp_path / '.hidden').mkdir()
    with pytest.raises(LayoutError) as info:
        check_training_layout(tmp_path, 'ISIC', 'f1')
    message = str(info.value)
    assert str(tmp_path / 'ISIC') in message and 'Other, ds' in message and '.hidden' not in message


def test_unknown_folder_lists_existing_ones(tmp_path):
    _training_tree(tmp_path)
    with pytest.raises(LayoutError, match='f1') as info:
        check_training_layout(tmp_path, 'ds', 'f2')
    assert '--folder' in str(info.value)


def test_missing_and_duplicate_weak_folders(tmp_path):
    folder = tmp_path / 'f'
    _png(folder / '5_A_weak' / 'x.png')
    _png(folder / '6_A_weak' / 'x.png')
    with pytest.raises(LayoutError) as info:
        find_weak_folders(folder)
    assert len(info.value.problems) == 2
    message = str(info.value)
    assert 'found several: 5_A_weak, 6_A_weak' in message and '<N>_B_weak' in message


def test_empty_weak_folder_and_bad_files_reported_together(tmp_path):
    folder = _training_tree(tmp_path)
    for path in (folder / '2_B_weak').iterdir():
        path.unlink()
    (folder / '2_A_weak' / 'junk.png').write_bytes(b'garbage')
    with pytest.raises(LayoutError) as info:
        check_training_layout(tmp_path, 'ds', 'f1')
    message = str(info.value)
    assert len(info.value.problems) == 2 and message.startswith('2 dataset layout problems')
    assert str(folder / '2_B_weak') in message and 'found none' in message
    assert str(folder / '2_A_weak' / 'junk.png') in message
    assert str(pickle.loads(pickle.dumps(info.value))) == message


def test_training_skip_bad_keeps_good_files(tmp_path):
    folder = _training_tree(tmp_path)
    (folder / '2_A_weak' / 'junk.jpg').write_bytes(b'garbage')
    result = check_training_layout(tmp_path, 'ds', 'f1', skip_bad=True)
    assert [os.path.basename(p) for p in result.paths_A] == ['A0.png', 'A1.png']
    assert [p.path for p in result.skipped] == [str(folder / '2_A_weak' / 'junk.jpg')]
    # Without verification the header is not opened, so the file is kept.
    assert len(check_training_layout(tmp_path, 'ds', 'f1', verify_images=False).paths_A) == 3


def test_label_path_for_accepts_variants(tmp_path):
    labels = tmp_path / 'labels'
    _png(labels / 'x_Segmentation.PNG')
    _png(labels / 'y_segmentation.jpg')
    assert label_path_for('/img/x.png', labels) == str(labels / 'x_Segmentation.PNG')
    assert label_path_for(tmp_path / 'y.bmp', labels) == str(labels / 'y_segmentation.jpg')
    assert label_path_for('z.png', labels) is None


def test_check_split_pairs(tmp_path):
    _split_tree(tmp_path)
    result = check_split(tmp_path, 'val')
    assert isinstance(result, SplitFiles) and len(result) == 2 and result.skipped == []
    image, label = result[0]
    assert image == str(tmp_path / 'val' / 'images' / 'a.png')
    assert label == str(tmp_path / 'val' / 'labels' / 'a_segmentation.png')
    assert all(lab is None for _, lab in check_split(tmp_path, 'val', need_labels=False))


def test_check_split_testB_flat_or_nested(tmp_path):
    _png(tmp_path / 'testB' / 'n1.png')
    assert check_split(tmp_path, 'testB').pairs == [(str(tmp_path / 'testB' / 'n1.png'), None)]
    _png(tmp_path / 'other' / 'testB' / 'images' / 'n2.png')
    assert len(check_split(tmp_path / 'other', 'testB')) == 1


def test_check_split_missing_and_empty_folders(tmp_path):
    with pytest.raises(LayoutError, match='testA split folder'):
        check_split(tmp_path, 'testA')
    (tmp_path / 'val' / 'images').mkdir(parents=True)
    with pytest.raises(LayoutError, match='labels'):
        check_split(tmp_path, 'val')
    (tmp_path / 'val' / 'labels').mkdir()
    with pytest.raises(LayoutError, match='found none') as info:
        check_split(tmp_path, 'val')
    assert str(tmp_path / 'val' / 'images') in str(info.value)


def test_check_split_lists_every_problem_at_once(tmp_path):
    _split_tree(tmp_path, names=('good', 'nolabel', 'bigger', 'broken'))
    val = tmp_path / 'val'
    (val / 'labels' / 'nolabel_segmentation.png').unlink()
    _png(val / 'labels' / 'bigger_segmentation.png', size=(9, 8))
    (val / 'images' / 'broken.png').write_bytes(b'nope')
    _png(val / 'labels' / 'orphan_segmentation.png')
    _png(val / 'labels' / 'readme.png')
    with pytest.raises(LayoutError) as info:
        check_split(tmp_path, 'val')
    problems = {os.path.basename(p.path): p.expected for p in info.value.problems}
    assert set(problems) == {'nolabel.png', 'bigger_segmentation.png', 'broken.png',
                             'orphan_segmentation.png', 'readme.png'}
    assert 'image without label' in problems['nolabel.png']
    assert 'nolabel_segmentation.png' in problems['nolabel.png']
    assert '8x8' in problems['bigger_segmentation.png'] and '9x8' in problems['bigger_segmentation.png']
    assert 'label without image' in problems['orphan_segmentation.png']
    assert 'readable image' in problems['broken.png']
    # One line per problem, each naming its full path.
    lines = str(info.value).splitlines()
    assert len(lines) == 6 and all(str(val) in line for line in lines[1:])


def test_check_split_skip_bad_returns_good_pairs(tmp_path):
    _split_tree(tmp_path, names=('good', 'nolabel'))
    (tmp_path / 'val' / 'labels' / 'nolabel_segmentation.png').unlink()
    result = check_split(tmp_path, 'val', skip_bad=True)
    assert [os.path.basename(img) for img, _ in result] == ['good.png']
    assert len(result.skipped) == 1 and 'nolabel.png' in str(result.skipped[0])


def test_check_split_skip_bad_still_raises_when_nothing_is_left(tmp_path):
    _split_tree(tmp_path, names=('only',))
    (tmp_path / 'val' / 'labels' / 'only_segmentation.png').unlink()
    with pytest.raises(LayoutError, match='at least one usable image'):
        check_split(tmp_path, 'val', skip_bad=True)


def _normal_folder(tmp_path, names):
    folder = tmp_path / 'data'
    (folder / '9_A_weak').mkdir(parents=True)
    (folder / f'{len(names)}_B_weak').mkdir()
    for name in names:
        Image.new('L', (4, 4)).save(folder / f'{len(names)}_B_weak' / name)
    return str(folder)


def test_held_out_normals_by_patient_takes_whole_patients_from_the_end(tmp_path):
    names = [f'P{patient}_flair.nii_{index:03d}.png' for patient, count in ((1, 3), (2, 2), (3, 4))
             for index in range(count)]
    folder = _normal_folder(tmp_path, names)
    # By name: the last 3, two of them slices of P3 whose other slices would be trained on.
    assert [os.path.basename(p) for p in held_out_normals(folder, 3)] == names[-3:]
    # By patient: all of P3 (4 >= 3); 5 needs P2 as well; hold_out_spec carries the rule between records.
    spec = hold_out_spec({'hold_out_normals': 5, 'hold_out_group': r'^(.*)_flair', 'other': 1})
    assert spec == {'hold_out_normals': 5, 'hold_out_group': r'^(.*)_flair'}
    assert [os.path.basename(p) for p in held_out_normals(folder, **spec)] == names[3:]
    assert [os.path.basename(p) for p in held_out_normals(folder, 3, r'^(.*)_flair')] == names[5:]
    assert hold_out_spec({}) == {'hold_out_normals': 0} and held_out_normals(folder, **hold_out_spec({})) == []
    with pytest.raises(LayoutError, match='does not match --hold_out_group'):
        held_out_normals(folder, 3, r'^(Q\d+)_')
