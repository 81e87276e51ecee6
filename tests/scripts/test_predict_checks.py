"""predict.py's per-file checks: inputs unlike the weights' training data, NaN/inf values, work bounds,
labels for some files only, the summary beside predictions.csv."""
import csv
import json
import os

import nibabel as nib
import pytest
import numpy as np
from PIL import Image

import predict
from conftest import REPO_ROOT
from data.image_io import read_image
from data.input_check import check_image, check_volume, profile

WEIGHTS = os.path.join(REPO_ROOT, 'weights')
FAST = ['--device', 'cpu', '--num_threads', '1', '--num_workers', '0', '--crf_workers', '1', '--amp', 'off']
LPS = np.diag([-1.0, -1.0, 2.0, 1.0])


def _run(weights, source, out, *extra):
    rows = predict.main(['--weights', os.path.join(WEIGHTS, weights), '--input', str(source), '--output', str(out),
                         *FAST, *map(str, extra)])
    return {os.path.basename(row['file']): row for row in rows}


def _csv(out):
    with open(out / 'predictions.csv', newline='') as handle:
        return {os.path.basename(row['file']): row for row in csv.DictReader(handle)}


def _brain_slice(size=64, seed=0):
    """A grey FLAIR-like slice: an elliptic brain with a bright blob, background exactly 0."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    brain = ((rows - size / 2) / (size * 0.35)) ** 2 + ((cols - size / 2) / (size * 0.3)) ** 2 <= 1
    grey = np.where(brain, rng.normal(110, 15, (size, size)), 0)
    grey[size // 3:size // 2, size // 3:size // 2] = 240
    return np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _photo(size=64, seed=0):
    """A skin-coloured photograph with a brown blob."""
    noise = np.random.default_rng(seed).normal(0, 6, (size, size, 3))
    image = np.full((size, size, 3), (205.0, 160.0, 140.0)) + noise
    image[size // 4:size // 2, size // 4:size // 2] = (110, 70, 50)
    return image.clip(0, 255).astype(np.uint8)


def _volume(seed=0, shape=(40, 36, 8)):
    """A skull-stripped FLAIR-like volume (background exactly 0) with a bright lesion."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[:shape[0], :shape[1]]
    head = ((x - 20) / 16) ** 2 + ((y - 18) / 14) ** 2 <= 1
    flair = np.zeros(shape, np.float32)
    for z in range(1, shape[2] - 1):
        flair[..., z][head] = rng.normal(300, 30, head.sum())
    flair[10:18, 8:18, 2:6] = rng.normal(800, 40, (8, 10, 4))
    return flair


def _save_volume(path, voxels):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(voxels, LPS), str(path))
    return path


def test_the_check_knows_each_released_dataset_from_the_weights_file():
    assert profile({'options': {'dataset': 'BraTS'}}) == 'mri' and profile({'options': {'dataset': 'ISIC'}}) == 'photo'
    assert profile({'options': {'dataset': 'MyLesions'}}) is None and profile({}) is None
    assert check_image(_photo(), None, False) == (None, [])  # another dataset's weights: nothing known, nothing said
    brain = _brain_slice()
    assert check_image(brain, 'mri', False) == (None, [])
    refusal, found = check_image(_photo(), 'mri', False)
    assert refusal.startswith('colour image (its channels differ by ') and found == []
    assert check_image(_photo(), 'mri', True)[0] is None and check_image(_photo(), 'mri', True)[1][0].startswith(
        'colour image')
    noisy = brain.copy()
    noisy[brain == 0] = 9  # a raw scan: the air around the head is not 0
    [warning] = check_image(noisy, 'mri', False)[1]
    assert warning.startswith('background not zero: 0 % of the pixels are 0') and 'SynthStrip' in warning
    assert check_image(brain // 8, 'mri', False)[1][0].startswith('dark: its 99.5th percentile is 30 of 255')
    assert check_image(_photo(), 'photo', False) == (None, [])
    grey_warnings = check_image(brain, 'photo', False)[1]
    assert grey_warnings[0] == 'grey image; the weights were trained on colour dermoscopy photographs'
    assert grey_warnings[1].endswith('of the pixels are black (training photographs: 15 % at most)')
    assert check_image(np.full((20, 20, 3), (200, 150, 120), np.uint8), 'photo', False)[1] == [
        'nearly uniform: its grey levels span 0 (training photographs: 9 or more)']
    volume = _volume()
    assert check_volume(volume, 'mri') == [] and check_volume(volume + 1, 'photo') == []
    assert check_volume(volume + 1, 'mri')[0].startswith('background not zero: 0 % of the voxels are 0')
    assert check_volume((volume > 500).astype(np.float32), 'mri') == [
        'only 1 distinct intensities in the brain: a mask or label map, not a FLAIR volume?']


@pytest.mark.slow
def test_mri_weights_refuse_a_photograph_and_warn_of_a_background_that_is_not_zero(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / 'photo.png')
    Image.fromarray(_brain_slice()).save(folder / 'stripped.png')
    raw = _brain_slice(seed=1)
    raw[raw == 0] = 12
    Image.fromarray(raw).save(folder / 'raw.png')
    rows = _run('BraTS.pt', folder, tmp_path / 'out')
    assert rows['photo.png']['status'].startswith('refused: colour image (its channels differ by ')
    assert not (tmp_path / 'out' / 'photo_mask.png').exists()
    assert rows['stripped.png']['status'] == 'ok' and rows['stripped.png']['input_check'] == ''
    assert rows['raw.png']['status'] == 'ok' and rows['raw.png']['input_check'].startswith('background not zero')
    table = _csv(tmp_path / 'out')
    assert table['raw.png']['input_check'] == rows['raw.png']['input_check'] and table['photo.png']['mask'] == ''
    summary = json.loads((tmp_path / 'out' / 'predictions_summary.json').read_text())
    assert (summary['predicted'], summary['refused'], summary['with_input_warning']) == (2, 1, 1)
    strict = _run('BraTS.pt', folder, tmp_path / 'strict', '--refuse_unexpected')
    assert strict['raw.png']['status'] == ('refused: unlike the weights\' training data (--refuse_unexpected True): '
                                           + rows['raw.png']['input_check'])
    assert strict['stripped.png']['status'] == 'ok' and not (tmp_path / 'strict' / 'raw_mask.png').exists()


@pytest.mark.slow
def test_a_nan_voxel_and_an_inf_pixel_are_background_and_said(tmp_path):
    volume = _volume()
    _save_volume(tmp_path / 'in' / 'clean.nii.gz', volume)
    volume[20, 18, 3] = np.nan
    volume[5, 5, 1] = np.inf
    _save_volume(tmp_path / 'in' / 'nan.nii.gz', volume)
    rows = _run('BraTS.pt', tmp_path / 'in', tmp_path / 'out')
    assert rows['nan.nii.gz']['input_check'] == '2 non-finite voxels (NaN/inf) read as 0, the background'
    assert rows['clean.nii.gz']['lesion_px'] > 0
    masks = [np.asanyarray(nib.load(str(tmp_path / 'out' / f'{name}_mask.nii.gz')).dataobj)
             for name in ('clean', 'nan')]
    np.testing.assert_array_equal(*masks)
    grey = _brain_slice()[..., 0].astype(np.float32) * 3.5
    Image.fromarray(grey).save(tmp_path / 'clean.tif')
    grey[0, 0] = np.inf  # alone, it scaled every other pixel to 0: an empty mask
    Image.fromarray(grey).save(tmp_path / 'inf.tif')
    np.testing.assert_array_equal(read_image(tmp_path / 'inf.tif'), read_image(tmp_path / 'clean.tif'))
    [row] = _run('BraTS.pt', tmp_path / 'inf.tif', tmp_path / 'tif').values()
    assert row['input_check'] == '1 non-finite pixels (NaN/inf) read as 0, the background' and row['lesion']


@pytest.mark.slow
def test_work_bounds_refuse_a_file_and_the_others_go_on(tmp_path):
    folder = tmp_path / 'in'
    _save_volume(folder / 'thin.nii.gz', np.ones((1, 1, 500), np.float32))
    giant = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), LPS)
    giant.header.set_data_shape((30000, 30000, 30000))  # the header alone: the voxels are never read
    (folder / 'giant.nii').write_bytes(giant.header.binaryblock + b'\0' * 4)
    _save_volume(folder / 'fine.nii.gz', _volume())
    rows = _run('BraTS.pt', folder, tmp_path / 'out')
    assert rows['giant.nii']['status'] == ('refused: 30000x30000x30000 voxels is 27000000 megavoxels, above '
                                           '--max_megavoxels 100 (memory and time grow with it); crop or resample '
                                           'it, or raise --max_megavoxels')
    assert rows['thin.nii.gz']['status'].startswith('refused: its axial slices are 1x1 voxels, smaller than '
                                                    '--min_slice_side 32 (BraTS: 240x240)')
    assert rows['fine.nii.gz']['status'] == 'ok'
    Image.fromarray(_photo(100)).save(tmp_path / 'photo.png')
    [row] = _run('ISIC.pt', tmp_path / 'photo.png', tmp_path / 'img', '--max_megapixels', '0.005').values()
    assert row['status'] == ('refused: 100x100 px is 0 megapixels, above --max_megapixels 0.005 (memory and time grow '
                             'with it); shrink it, or raise --max_megapixels')


def test_labels_for_some_files_score_those_and_list_the_others(tmp_path, capsys):
    folder, labels = tmp_path / 'in', tmp_path / 'labels'
    folder.mkdir()
    labels.mkdir()
    for name in ('a', 'b'):
        Image.fromarray(_photo(seed=ord(name))).save(folder / f'{name}.png')
    label = np.zeros((64, 64), np.uint8)
    label[16:32, 16:32] = 255
    Image.fromarray(label).save(labels / 'a_segmentation.png')
    rows = _run('ISIC.pt', folder, tmp_path / 'out', '--labels', labels)
    assert 'DI' in rows['a.png'] and 'DI' not in rows['b.png']
    out = capsys.readouterr().out
    assert f'note: 1 of 2 inputs have no label in {labels} (their rows are not scored): {folder / "b.png"}' in out
    assert f"mean over 1 labelled: JA {rows['a.png']['JA']:.4f} DI {rows['a.png']['DI']:.4f}" in out
    table = _csv(tmp_path / 'out')
    assert list(table) == ['a.png', 'b.png'] and table['b.png']['DI'] == '' and float(table['a.png']['DI']) >= 0
    assert json.loads((tmp_path / 'out' / 'predictions_summary.json').read_text())['scored'] == 1
