"""Tests for tools/prepare_weak.py on tiny folders of weakly labelled images it is meant for."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import file_hashes
from data.layout import check_split, check_training_layout
from tools import prepare_weak
from tools.prepare_common import PrepareError

H, W = 30, 40


def _image(seed, lesion):
    rng = np.random.RandomState(seed)
    image = rng.randint(150, 200, (H, W, 3)).astype(np.uint8)
    mask = np.zeros((H, W), bool)
    if lesion:
        mask[8:20, 10:25] = True
        image[mask] = 60
    return image, mask


@pytest.fixture
def src(tmp_path):
    """4 lesion images, 5 normal ones (one a JPEG), 3 labelled lesion images with masks."""
    folders = {name: tmp_path / name for name in ('lesion', 'normal', 'labelled', 'masks')}
    for folder in folders.values():
        folder.mkdir()
    for i in range(4):
        Image.fromarray(_image(i, True)[0]).save(folders['lesion'] / f'les{i}.png')
    for i in range(5):
        Image.fromarray(_image(10 + i, False)[0]).save(folders['normal'] / f'nor{i}.{"jpg" if i == 0 else "png"}')
    for i in range(3):
        image, mask = _image(20 + i, True)
        Image.fromarray(image).save(folders['labelled'] / f'case{i}.png')
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folders['masks'] / f'case{i}_segmentation.png')
    return folders


def _args(src, out, *extra):
    return prepare_weak.build_parser().parse_args(
        ['--lesion', str(src['lesion']), '--normal', str(src['normal']), '--labelled_images', str(src['labelled']),
         '--labelled_masks', str(src['masks']), '--out', str(out), '--dataset', 'MyLesions', '--size', '32', *extra])


def test_builds_the_layout_train_and_test_read(src, tmp_path):
    out = tmp_path / 'out'
    summary = prepare_weak.run(_args(src, out, '--n_val', '2', '--n_testB', '2'))
    folder = out / 'MyLesions' / 'mylesions_1'
    assert summary == f'MyLesions: 4 A_weak, 3 B_weak, 2 val, 1 testA, 2 testB -> {folder}'
    dir_A, dir_B = check_training_layout(str(out), 'MyLesions', 'mylesions_1')
    assert dir_A.endswith('4_A_weak') and dir_B.endswith('3_B_weak')
    val, test_a, test_b = (check_split(str(folder), split) for split in ('val', 'testA', 'testB'))
    assert len(val.pairs) == 2 and len(test_a.pairs) == 1 and len(test_b.pairs) == 2
    image = np.asarray(Image.open(val.pairs[0][0]))
    label = np.asarray(Image.open(val.pairs[0][1]))
    assert image.shape == (32, 32, 3) and label.shape == (32, 32) and set(np.unique(label)) == {0, 255}
    splits = json.loads((folder / 'splits.json').read_text())
    held_out = set(splits['files']['testB'])
    assert held_out.isdisjoint(splits['files']['3_B_weak']) and len(held_out) == 2
    assert sorted(splits['val'] + splits['test']) == sorted(['case0.png', 'case1.png', 'case2.png'] + list(held_out))
    first = file_hashes(folder)
    prepare_weak.run(_args(src, out, '--n_val', '2', '--n_testB', '2', '--overwrite'))
    assert file_hashes(folder) == first  # the same seed and input give the same files


def test_test_splits_are_optional(src, tmp_path):
    out = tmp_path / 'out'
    summary = prepare_weak.run(_args(src, out, '--n_val', '3', '--folder', 'mine'))
    assert summary.endswith(f'3 val, 0 testA, 0 testB -> {out / "MyLesions" / "mine"}')
    assert not (out / 'MyLesions' / 'mine' / 'testA').exists()
    assert len(check_split(str(out / 'MyLesions' / 'mine'), 'val').pairs) == 3


def test_a_held_out_image_that_is_also_trained_on_is_refused(src, tmp_path):
    shutil.copy(src['labelled'] / 'case1.png', src['lesion'] / 'copy.png')
    with pytest.raises(PrepareError, match=r'case1\.png: the same file as the training image .*copy\.png'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2'))
    assert not (tmp_path / 'out' / 'MyLesions').exists() or not any((tmp_path / 'out' / 'MyLesions').iterdir())


def test_input_errors_name_the_folder_and_the_fix(src, tmp_path, capsys):
    with pytest.raises(PrepareError, match=r'3 labelled images, but --n_val is 5; add labelled images or lower'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '5'))
    with pytest.raises(PrepareError, match=r'5 normal images leave none to train on with --n_testB 5'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_testB', '5', '--n_val', '2'))
    (src['masks'] / 'case2_segmentation.png').unlink()
    with pytest.raises(PrepareError, match=r'case2\.png: image without mask; expected .*case2_segmentation\.png'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2'))
    with pytest.raises(SystemExit):
        prepare_weak.main(['--lesion', str(src['lesion']), '--normal', str(src['normal']), '--labelled_images',
                           str(src['labelled']), '--labelled_masks', str(src['masks']), '--out', str(tmp_path),
                           '--dataset', 'X', '--n_val', '0'])
    assert 'argument --n_val: expected an integer >= 1, got 0' in capsys.readouterr().err


def test_two_files_written_under_one_name_are_refused(src, tmp_path):
    Image.fromarray(_image(30, True)[0]).save(src['lesion'] / 'les0.jpg')
    with pytest.raises(PrepareError, match=r'les0\..*same name as .*les0\..* once written as les0\.png in A_weak'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2'))
