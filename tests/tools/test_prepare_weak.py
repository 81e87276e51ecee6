"""Tests for tools/prepare_weak.py on tiny folders of weakly labelled images it is meant for."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import file_hashes
from data.layout import check_split, check_training_layout
from tools import prepare_brats, prepare_isic, prepare_weak
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


def _main_argv(src, out, *extra):
    return ['--lesion', str(src['lesion']), '--normal', str(src['normal']), '--labelled_images', str(src['labelled']),
            '--labelled_masks', str(src['masks']), '--out', str(out), '--size', '32', '--n_val', '2', *extra]


def _tree(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob('*'))


@pytest.mark.parametrize('flags', [
    ['--dataset', '..', '--folder', 'victim', '--overwrite'],
    ['--dataset', '../escaped'],
    ['--dataset', 'MyLesions', '--folder', '../../x'],
    ['--dataset', 'MyLesions', '--folder', '..', '--overwrite', 'True'],
    ['--dataset', 'MyLesions', '--folder', '.'],
    ['--dataset', ''],
    ['--dataset', 'MyLesions', '--folder', 'a\\b'],
])
def test_a_dataset_or_folder_that_is_not_one_folder_name_is_refused_before_anything_is_written(
        src, tmp_path, capsys, flags):
    """The fault probe's cases: a sibling of --out replaced, files written outside --out."""
    sandbox = tmp_path / 'sandbox'
    (sandbox / 'victim').mkdir(parents=True)
    (sandbox / 'victim' / 'keep.txt').write_text('mine')
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        prepare_weak.main(_main_argv(src, sandbox / 'root', *flags))
    assert exit_info.value.code == 2 and _tree(tmp_path) == before
    flag = '--folder' if flags[1] == 'MyLesions' else '--dataset'
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.split(': error: ')[1].startswith(f"{flag} must be one folder name, without / or \\ and not "
                            f"'', '.' or '..' (the data folder is <dataroot>/<dataset>/<folder>")
    assert error.endswith(f'got {flags[flags.index(flag) + 1]!r}')


def test_the_output_folder_is_checked_again_where_it_is_made(src, tmp_path):
    """run() called without the command line (as the tests and other tools do) refuses the same names."""
    with pytest.raises(PrepareError, match=r"--dataset must be one folder name.*got '\.\.'"):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2', '--dataset', '..', '--folder', 'victim'))
    assert not (tmp_path / 'victim').exists() and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('words, replaced', [(['--overwrite'], True), (['--overwrite', 'True'], True),
                                             (['--overwrite', 'False'], False), ([], False)])
def test_overwrite_takes_true_false_like_every_boolean_flag(src, tmp_path, capsys, words, replaced):
    out = tmp_path / 'out'
    prepare_weak.main(_main_argv(src, out, '--dataset', 'MyLesions'))
    capsys.readouterr()
    if replaced:
        prepare_weak.main(_main_argv(src, out, '--dataset', 'MyLesions', '--seed', '1', *words))
        assert '-> ' in capsys.readouterr().out
    else:
        with pytest.raises(SystemExit, match=r'mylesions_1: output folder exists; pass --overwrite'):
            prepare_weak.main(_main_argv(src, out, '--dataset', 'MyLesions', '--seed', '1', *words))
    settings = json.loads((out / 'MyLesions' / 'mylesions_1' / 'splits.json').read_text())['settings']
    assert settings['seed'] == (1 if replaced else prepare_weak.build_parser().get_default('seed'))


def test_overwrite_replaces_only_a_folder_a_prepare_tool_made(src, tmp_path):
    mine = tmp_path / 'out' / 'MyLesions' / 'mine'
    mine.mkdir(parents=True)
    (mine / 'keep.txt').write_text('mine')
    with pytest.raises(PrepareError, match=r'mine: not a folder made by tools/prepare_\*\.py \(no splits\.json\)'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2', '--folder', 'mine', '--overwrite'))
    assert _tree(tmp_path / 'out') == ['MyLesions', 'MyLesions/mine', 'MyLesions/mine/keep.txt']


def test_the_same_file_as_lesion_and_normal_is_refused_naming_both(src, tmp_path):
    shutil.copy(src['lesion'] / 'les2.png', src['normal'] / 'also_normal.png')
    with pytest.raises(PrepareError, match=r'also_normal\.png: the same file as the lesion image .*les2\.png; '
                                           r'an image is either lesion \(--lesion\) or normal'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2'))
    with pytest.raises(PrepareError, match=r'the same file as the lesion image'):
        prepare_weak.run(_args(src, tmp_path / 'out', '--n_val', '2', '--normal', str(src['lesion'])))
    assert not (tmp_path / 'out' / 'MyLesions' / 'mylesions_1').exists()


@pytest.mark.parametrize('seed', range(6))
def test_identical_labelled_images_stay_on_one_side_of_val_and_test_a(src, tmp_path, seed):
    for i in range(3):  # case0 has copies copy0..copy2 (each with its mask), case1 and case2 none
        shutil.copy(src['labelled'] / 'case0.png', src['labelled'] / f'copy{i}.png')
        shutil.copy(src['masks'] / 'case0_segmentation.png', src['masks'] / f'copy{i}_segmentation.png')
    out = tmp_path / 'out'
    prepare_weak.run(_args(src, out, '--n_val', '2', '--seed', str(seed)))
    files = json.loads((out / 'MyLesions' / 'mylesions_1' / 'splits.json').read_text())['files']
    copies = {'case0.png', 'copy0.png', 'copy1.png', 'copy2.png'}
    val, test_a = set(files['val']), set(files.get('testA', []))
    assert copies <= val or copies <= test_a
    assert len(val - copies) + (1 if copies <= val else 0) == 2  # --n_val distinct images in val


def test_what_a_killed_run_left_is_named_and_removed(src, tmp_path, capsys):
    dataset = tmp_path / 'out' / 'MyLesions'
    partial = dataset / '.mylesions_1.partial-0123abcd'
    (partial / 'val').mkdir(parents=True)
    other = dataset / '.other_1.partial-0123abcd'  # another folder's: not this run's business
    other.mkdir()
    prepare_weak.main(_main_argv(src, tmp_path / 'out', '--dataset', 'MyLesions'))
    out = capsys.readouterr().out
    assert f'note: {partial}: left by an interrupted run (half-built); removed' in out
    assert not partial.exists() and other.exists()
    assert sorted(p.name for p in dataset.iterdir()) == ['.other_1.partial-0123abcd', 'mylesions_1']


def test_a_run_killed_while_replacing_puts_the_earlier_folder_back(src, tmp_path, capsys):
    """Killed between setting the old folder aside and renaming the new one in: nothing is lost."""
    out = tmp_path / 'out'
    prepare_weak.run(_args(src, out, '--n_val', '2'))
    folder = out / 'MyLesions' / 'mylesions_1'
    before = file_hashes(folder)
    old = out / 'MyLesions' / '.mylesions_1.old-0123abcd'
    folder.rename(old)
    shutil.copytree(old, out / 'MyLesions' / '.mylesions_1.partial-0123abcd')
    with pytest.raises(PrepareError, match='output folder exists; pass --overwrite'):
        prepare_weak.run(_args(src, out, '--n_val', '2', '--seed', '1'))
    assert 'put back as' in capsys.readouterr().out
    assert file_hashes(folder) == before and sorted(os.listdir(out / 'MyLesions')) == ['mylesions_1']


@pytest.mark.parametrize('tool, required', [(prepare_weak, ['--lesion', 'l', '--normal', 'n', '--labelled_images', 'i',
                                                            '--labelled_masks', 'm', '--dataset', 'D']),
                                            (prepare_isic, ['--images', 'i', '--masks', 'm']),
                                            (prepare_brats, ['--src', 's'])])
def test_every_prepare_tool_takes_overwrite_as_a_boolean_flag(tool, required):
    parser = tool.build_parser()
    for words, value in (([], False), (['--overwrite'], True), (['--overwrite', 'True'], True),
                         (['--overwrite', 'False'], False), (['--overwrite', 'no', '--seed', '3'], False)):
        assert parser.parse_args([*required, '--out', 'o', *words]).overwrite is value
    assert 'True (or the bare flag)' in parser.format_help()
