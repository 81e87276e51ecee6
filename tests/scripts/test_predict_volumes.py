"""predict.py on NIfTI volumes: tiny BraTS-like subjects written with nibabel, weights/BraTS.pt."""
import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import predict
from conftest import REPO_ROOT
from data.brats import MIN_BRAIN_FRAC
from tools import prepare_brats
from evaluation.metrics import confusion_counts, scores_from_counts
from evaluation.postprocess import largest_component
from refinement.predictor import Predictor

pytestmark = pytest.mark.slow  # every test here takes seconds (trains or runs scripts)

WEIGHTS = os.path.join(REPO_ROOT, 'weights', 'BraTS.pt')
FAST = ['--device', 'cpu', '--num_threads', '1', '--num_workers', '0', '--crf_workers', '1', '--amp', 'off']
SHAPE = (40, 36, 8)
LPS = np.diag([-1.0, -1.0, 2.0, 1.0])  # BraTS's voxel order, 2 mm slices
HEAD_SLICES = range(1, 7)  # slice 0 holds a speck of brain (below MIN_BRAIN_FRAC), slice 7 none


def _subject(seed):
    """(FLAIR, whole-tumour seg) of one subject: a noisy elliptic head on slices 1-6 with a bright tumour."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[:SHAPE[0], :SHAPE[1]]
    head = ((x - 20) / 16) ** 2 + ((y - 18) / 14) ** 2 <= 1
    flair = np.zeros(SHAPE, np.float32)
    for z in HEAD_SLICES:
        flair[..., z][head] = rng.normal(300, 30, head.sum())
    flair[18:22, 16:20, 0] = 300
    seg = np.zeros(SHAPE, np.uint8)
    seg[8 + seed:16 + seed, 8:18, 2:6] = 2
    flair[seg > 0] = rng.normal(800, 40, (seg > 0).sum())
    return flair, seg


def _save(path, array, affine=LPS):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _brats_subject(root, subject_id, seed=0):
    flair, seg = _subject(seed)
    _save(root / subject_id / f'{subject_id}_flair.nii.gz', flair)
    _save(root / subject_id / f'{subject_id}_t1.nii.gz', flair / 2)
    _save(root / subject_id / f'{subject_id}_seg.nii.gz', seg)


def _run(source, out, *extra, weights=WEIGHTS):
    return predict.main(['--weights', weights, '--input', str(source), '--output', str(out), *FAST, *map(str, extra)])


def _load(path):
    return nib.load(str(path))


def test_a_subject_folder_gets_its_mask_in_its_own_grid_and_is_scored_over_its_voxels(tmp_path):
    _brats_subject(tmp_path / 'data', 'Brats18_X_1')
    out = tmp_path / 'out'
    [row] = _run(tmp_path / 'data', out, '--labels', tmp_path / 'data', '--save_prob')
    flair = _load(tmp_path / 'data' / 'Brats18_X_1' / 'Brats18_X_1_flair.nii.gz')
    written = _load(out / 'Brats18_X_1' / 'Brats18_X_1_flair_mask.nii.gz')
    mask = np.asanyarray(written.dataobj)
    assert mask.shape == SHAPE and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(written.affine, flair.affine)
    assert written.header.get_zooms() == flair.header.get_zooms()
    assert not mask[..., 0].any() and not mask[..., 7].any()  # too little brain, and none
    prob = _load(out / 'Brats18_X_1' / 'Brats18_X_1_flair_prob.nii.gz')
    assert prob.get_data_dtype() == np.float32 and prob.shape == SHAPE
    seg = np.asanyarray(_load(tmp_path / 'data' / 'Brats18_X_1' / 'Brats18_X_1_seg.nii.gz').dataobj) > 0
    expected = scores_from_counts(*confusion_counts(mask > 0, seg))
    assert row['DI'] == pytest.approx(expected['DI']) and row['JA'] == pytest.approx(expected['JA'])
    assert row['lesion_px'] == mask.sum() and row['lesion_ml'] == pytest.approx(mask.sum() * 2 / 1000)
    with open(out / 'predictions.csv', newline='') as handle:
        table = list(csv.DictReader(handle))
    assert [r['file'] for r in table] == [str(tmp_path / 'data' / 'Brats18_X_1' / 'Brats18_X_1_flair.nii.gz')]
    assert table[0]['kind'] == 'volume' and float(table[0]['DI']) == pytest.approx(expected['DI'], abs=1e-6)
    assert json.loads((out / 'predictions_summary.json').read_text())['mean']['DI'] == pytest.approx(expected['DI'])


def test_slices_are_those_prepare_brats_writes_in_any_voxel_order(tmp_path, monkeypatch):
    src = tmp_path / 'src'
    for seed, subject_id in enumerate(('Brats18_A_1', 'Brats18_B_1', 'Brats18_C_1')):
        _brats_subject(src, subject_id, seed)
    prepare_brats.main(['--src', str(src), '--out', str(tmp_path / 'prepared'), '--size', '256', '--n_val', '1',
                        '--n_test', '1', '--min_lesion_px', '20'])
    written = {}
    for folder, _, names in os.walk(tmp_path / 'prepared'):
        for name in names:
            if name.startswith('Brats18_A_1_flair_') and not name.endswith('_segmentation.png'):
                written[int(name[-7:-4])] = np.asarray(Image.open(os.path.join(folder, name)))
    assert written
    seen = []
    decide = Predictor.decide
    monkeypatch.setattr(Predictor, 'decide', lambda self, images, raws: seen.extend(raws) or decide(self, images, raws))
    _run(src / 'Brats18_A_1' / 'Brats18_A_1_flair.nii.gz', tmp_path / 'lps')
    assert len(seen) == len(HEAD_SLICES)
    for z, image in written.items():
        np.testing.assert_array_equal(seen[z - HEAD_SLICES[0]], image)
    # The same subject stored R, A, S (x and y flipped, as many tools write): the same slices, the same mask back.
    flair = _load(src / 'Brats18_A_1' / 'Brats18_A_1_flair.nii.gz')
    ras = _save(tmp_path / 'ras' / 'ras.nii.gz', np.asanyarray(flair.dataobj)[::-1, ::-1],
                np.diag([1.0, 1.0, 2.0, 1.0]))
    seen.clear()
    _run(ras, tmp_path / 'ras_out')
    assert len(seen) == len(HEAD_SLICES) and all(np.array_equal(seen[z - 1], written[z]) for z in written)
    lps_mask = np.asanyarray(_load(tmp_path / 'lps' / 'Brats18_A_1_flair_mask.nii.gz').dataobj)
    ras_mask = np.asanyarray(_load(tmp_path / 'ras_out' / 'ras_mask.nii.gz').dataobj)
    np.testing.assert_array_equal(ras_mask, lps_mask[::-1, ::-1])


def test_largest_3d_keeps_one_component_and_min_brain_frac_0_predicts_every_slice_with_brain(tmp_path, monkeypatch):
    # Two heads apart: the left one on slices 1-2, the right one on slices 3-6; a speck of brain on slice 0.
    x, y = np.mgrid[:SHAPE[0], :SHAPE[1]]
    left, right = ((x - 11) / 9) ** 2 + ((y - 18) / 14) ** 2 <= 1, ((x - 30) / 8) ** 2 + ((y - 18) / 14) ** 2 <= 1
    flair = np.zeros(SHAPE, np.float32)
    noise = np.random.default_rng(0).normal(300, 30, SHAPE).astype(np.float32)
    flair[..., 1:3] = np.where(left[..., None], noise[..., 1:3], 0)
    flair[..., 3:7] = np.where(right[..., None], noise[..., 3:7], 0)
    flair[18:22, 16:20, 0] = 300
    source = _save(tmp_path / 'two.nii.gz', flair)
    seen = []
    decide = Predictor.decide
    monkeypatch.setattr(Predictor, 'decide', lambda self, images, raws: seen.extend(raws) or decide(self, images, raws))
    _run(source, tmp_path / 'plain', '--min_brain_frac', 0)
    assert len(seen) == 7  # every slice with any brain, the speck too
    seen.clear()
    _run(source, tmp_path / 'largest', '--largest_3d')
    assert len(seen) == 6 and MIN_BRAIN_FRAC == prepare_brats.build_parser().get_default('min_brain_frac')
    plain = np.asanyarray(_load(tmp_path / 'plain' / 'two_mask.nii.gz').dataobj) > 0
    largest = np.asanyarray(_load(tmp_path / 'largest' / 'two_mask.nii.gz').dataobj) > 0
    plain[..., 0] = False  # the speck's slice, predicted above only
    assert ndimage.label(plain, np.ones((3, 3, 3)))[1] >= 2
    np.testing.assert_array_equal(largest, largest_component(plain))


def test_volume_problems_are_one_line_errors(tmp_path, capsys):
    flair, seg = _subject(0)
    four_d = _save(tmp_path / 'vols' / 'four.nii.gz', np.stack([flair] * 4, axis=3))
    sagittal = _save(tmp_path / 'vols' / 'sagittal.nii.gz', flair, np.array([[0, 0, 1.0, 0], [0, 1, 0, 0], [1, 0, 0, 0],
                                                                     [0, 0, 0, 1]]))
    wrong_label = _save(tmp_path / 'labels' / 'vol_seg.nii.gz', seg[:, :, :4])
    volume = _save(tmp_path / 'vols' / 'vol.nii.gz', flair)
    cut = tmp_path / 'vols' / 'cut.nii.gz'
    cut.write_bytes(volume.read_bytes()[:3000])  # its header reads, its voxels do not

    def error(source, *extra, weights=WEIGHTS):
        with pytest.raises(SystemExit) as info:
            _run(source, tmp_path / 'out', *extra, weights=weights)
        message = str(info.value.code)
        assert '\n' not in message
        return message

    hint = '(--skip_bad_images True goes on without such files)'
    assert error(four_d) == (f'error: {four_d}: expected a 3-D volume of one MRI sequence (as <ID>_flair.nii.gz), '
                             f'got shape (40, 36, 8, 4); save its FLAIR volume alone (e.g. nibabel: '
                             f'image.slicer[..., 0]), then pass that {hint}')
    assert error(sagittal) == (f'error: {sagittal}: expected axial slices along the third voxel axis (as BraTS: '
                               f'L,P,S), but its voxel axes run S,A,R, so its slices are sagittal; reorient it '
                               f'(e.g. fslreorient2std), then pass that {hint}')
    assert error(volume, '--labels', wrong_label) == (f'error: label {wrong_label} is (40, 36, 4) but {volume} is '
                                                      f'(40, 36, 8); a label must have its input\'s size')
    isic = os.path.join(REPO_ROOT, 'weights', 'ISIC.pt')
    assert error(volume, weights=isic) == (f'error: {isic} (given the NIfTI volume {volume}) was trained on ISIC, not '
                                           f'BraTS; pass the BraTS weights (weights/BraTS.pt), or '
                                           f'--allow_other_dataset True to apply it anyway')
    message = error(cut)
    assert message.startswith(f'error: cannot read NIfTI {cut} (') and message.endswith(
        f'; replace or remove this file, then run again {hint}')
    rows = _run(tmp_path / 'vols', tmp_path / 'out', '--skip_bad_images')
    assert {os.path.basename(r['file']): r['status'][:9] for r in rows} == {
        'cut.nii.gz': 'skipped: ', 'four.nii.gz': 'skipped: ', 'sagittal.nii.gz': 'skipped: ', 'vol.nii.gz': 'ok'}
