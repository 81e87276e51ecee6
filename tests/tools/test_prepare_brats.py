"""Tests for tools/prepare_brats.py on tiny synthetic BraTS volumes (both namings) written with nibabel."""
import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from data.layout import check_split, check_training_layout
from tools import prepare_brats
from tools.prepare_common import PrepareError
from conftest import file_hashes, help_text

SHAPE = (32, 32, 12)
# Whole-tumour pixels per axial slice z; with --min_lesion_px 20, z 6-8 are A, 4-5 are skipped.
LESION_PX = [0, 0, 0, 0, 5, 19, 20, 30, 40, 0, 0, 0]
EXPECTED_A, EXPECTED_B = {6, 7, 8}, {2, 3, 9, 10, 11}  # z 0-1 hold too little brain
LESION_X, LESION_Y = slice(5, 11), slice(20, 28)  # volume axes 0 and 1: image columns and rows
SIZE, PAD = 48, 8
BRATS_IDS = ['Brats18_TCIA01_101_1', 'Brats18_TCIA01_102_1', 'Brats18_CBICA_AAB_1', 'Brats18_2013_2_1']
MSD_IDS = ['BRATS_001', 'BRATS_002']
FLAGS = ['--min_lesion_px', '20', '--size', str(SIZE), '--n_val', '1', '--n_test', '1']


def _volumes(seed):
    """(image, seg) of one subject: a 24x24 brain square on z >= 2, an 8x8 one below, LESION_PX tumour."""
    rng = np.random.RandomState(seed)
    image = np.zeros(SHAPE, np.float32)
    image[4:28, 4:28, 2:] = rng.uniform(100, 500, (24, 24, SHAPE[2] - 2))
    image[12:20, 12:20, :2] = 300
    image[20, 6, 5] = 32767  # an isolated outlier, as in some BraTS 2018 FLAIRs
    seg = np.zeros(SHAPE, np.uint8)
    for z, count in enumerate(LESION_PX):
        block = np.zeros((LESION_X.stop - LESION_X.start, LESION_Y.stop - LESION_Y.start), np.uint8)
        block.flat[:count] = (2, 4, 1)[z % 3]
        seg[LESION_X, LESION_Y, z] = block
    return image, seg


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _write_brats(root, subject_id, seed, seg_shape=None):
    image, seg = _volumes(seed)
    folder = root / subject_id
    _save(folder / f'{subject_id}_flair.nii.gz', image)
    _save(folder / f'{subject_id}_t1.nii.gz', image * 0.5)
    _save(folder / f'{subject_id}_seg.nii.gz', seg if seg_shape is None else np.zeros(seg_shape, np.uint8))


def _write_msd(root, subject_id, seed):
    image, seg = _volumes(seed)
    # Channel c holds (c + 1) x FLAIR, so the channel that was read can be told apart.
    _save(root / 'imagesTr' / f'{subject_id}.nii.gz', np.stack([image * (c + 1) for c in range(4)], axis=3))
    _save(root / 'labelsTr' / f'{subject_id}.nii.gz', seg)


@pytest.fixture(scope='module')
def src(tmp_path_factory):
    """Four BraTS 2018-2021 subjects (in HGG/ and LGG/) and two Decathlon 4-D subjects."""
    root = tmp_path_factory.mktemp('brats_src')
    for i, subject_id in enumerate(BRATS_IDS):
        _write_brats(root / ('HGG' if i < 3 else 'LGG'), subject_id, seed=i)
    for i, subject_id in enumerate(MSD_IDS):
        _write_msd(root / 'Task01_BrainTumour', subject_id, seed=10 + i)
    (root / 'Task01_BrainTumour' / 'imagesTr' / '._BRATS_001.nii.gz').write_bytes(b'macOS metadata')
    return root


@pytest.fixture(scope='module')
def built(src, tmp_path_factory):
    """(dataroot, folder dir, summary line) of one run on ``src``."""
    out = tmp_path_factory.mktemp('brats_out')
    summary = prepare_brats.run(prepare_brats.build_parser().parse_args(['--src', str(src), '--out', str(out),
                                                                         *FLAGS]))
    return out, out / 'BraTS' / 'brats_1', summary


def _z(name):
    return int(name.split('_')[-1].split('.')[0])


def test_layout_split_and_slice_rule(built):
    out, folder, summary = built
    dir_a, dir_b = check_training_layout(out, 'BraTS', 'brats_1')
    splits = json.loads((folder / 'splits.json').read_text())
    assert sorted(splits['train'] + splits['val'] + splits['test']) == sorted(BRATS_IDS + MSD_IDS)
    assert len(splits['train']) == 4 and len(splits['val']) == 1 and len(splits['test']) == 1
    roles = {'val': 'val', 'testA': 'test', 'testB': 'test',
             os.path.basename(dir_a): 'train', os.path.basename(dir_b): 'train'}
    for out_folder, names in splits['files'].items():
        for name in names:
            owners = [sid for sid in BRATS_IDS + MSD_IDS if name.startswith(sid + '_flair_')]
            assert len(owners) == 1 and owners[0] in splits[roles[out_folder]], (out_folder, name)
    for out_folder, expected in ((dir_a, EXPECTED_A), (dir_b, EXPECTED_B)):
        names = os.listdir(out_folder)
        assert len(names) == 4 * len(expected) and {_z(n) for n in names} == expected
    assert os.path.basename(dir_a) == '12_A_weak' and os.path.basename(dir_b) == '20_B_weak'
    assert {_z(n) for n in os.listdir(folder / 'testB')} == EXPECTED_B
    for split in ('val', 'testA', 'testB'):
        assert len(check_split(folder, split)) == (3 if split != 'testB' else 5)
    assert summary.endswith(f'-> {folder}') and '12 A_weak, 20 B_weak, 3 val, 3 testA, 5 testB' in summary


def test_masks_geometry_and_normalisation(built):
    _, folder, _ = built
    for split in ('val', 'testA'):
        for image_path, label_path in check_split(folder, split):
            z = _z(os.path.basename(image_path))
            label = Image.open(label_path)
            mask = np.asarray(label)
            assert label.mode == 'L' and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
            # volume[:, :, z].T: volume axis 1 (y) becomes rows, axis 0 (x) columns; 8 px zero padding.
            rows, cols = np.nonzero(mask)
            assert len(rows) == LESION_PX[z]
            assert rows.min() >= LESION_Y.start + PAD and rows.max() < LESION_Y.stop + PAD
            assert cols.min() >= LESION_X.start + PAD and cols.max() < LESION_X.stop + PAD
            image = np.asarray(Image.open(image_path))
            assert image.shape == (SIZE, SIZE, 3) and (image[:, :, 0] == image[:, :, 2]).all()
            brain = np.zeros((SIZE, SIZE), bool)
            brain[4 + PAD:28 + PAD, 4 + PAD:28 + PAD] = True
            assert (image[~brain] == 0).all()
            # The 32767 outlier is clipped, so the brain is not crushed into the lowest grey levels.
            assert np.median(image[brain][:, 0]) > 60 and image.max() == 255


def test_msd_modality_channel(src):
    subjects = {s.id: s for s in prepare_brats.find_subjects(str(src / 'Task01_BrainTumour'), 't2')}
    assert sorted(subjects) == MSD_IDS  # the hidden '._BRATS_001.nii.gz' is not a subject
    volume, tumour = prepare_brats.load_subject(subjects['BRATS_002'])
    expected, seg = _volumes(11)
    assert np.allclose(volume, expected * 4) and (tumour == (seg > 0)).all()  # t2 is channel 3


def test_same_seed_same_bytes_and_overwrite(src, built, tmp_path):
    out, folder, _ = built
    argv = ['--src', str(src), '--out', str(tmp_path), *FLAGS]
    prepare_brats.run(prepare_brats.build_parser().parse_args(argv))
    assert file_hashes(tmp_path / 'BraTS' / 'brats_1') == file_hashes(folder)
    with pytest.raises(PrepareError, match='--overwrite'):
        prepare_brats.run(prepare_brats.build_parser().parse_args(argv))
    prepare_brats.run(prepare_brats.build_parser().parse_args(argv + ['--overwrite', '--seed', '1']))
    assert sorted(os.listdir(tmp_path / 'BraTS')) == ['brats_1']


def _broken(tmp_path, kind):
    """A source folder with one problem of ``kind``; returns (src, path the error must name)."""
    src = tmp_path / 'src'
    if kind == 'missing src':
        return src, src
    src.mkdir()
    if kind == 'no subjects':
        (src / 'notes.txt').write_text('nothing here')
        return src, src
    for i in range(2):  # two good subjects, so the split itself works
        _write_brats(src, f'Brats18_OK_{i}', i)
    if kind == 'shape mismatch':
        _write_brats(src, 'Brats18_X_1', 0, seg_shape=(32, 32, 10))
        return src, src / 'Brats18_X_1' / 'Brats18_X_1_seg.nii.gz'
    _write_brats(src, 'Brats18_X_1', 0)
    if kind == 'missing seg':
        os.remove(src / 'Brats18_X_1' / 'Brats18_X_1_seg.nii.gz')
        return src, src / 'Brats18_X_1'
    if kind == 'missing flair':
        os.remove(src / 'Brats18_X_1' / 'Brats18_X_1_flair.nii.gz')
        return src, src / 'Brats18_X_1'
    if kind == 'unreadable':
        flair = src / 'Brats18_X_1' / 'Brats18_X_1_flair.nii.gz'
        flair.write_bytes(flair.read_bytes()[:300])  # a truncated download
        return src, src / 'Brats18_X_1' / 'Brats18_X_1_flair.nii.gz'
    _write_msd(src / 'Task01', 'BRATS_009', 0)  # 'msd without label'
    os.remove(src / 'Task01' / 'labelsTr' / 'BRATS_009.nii.gz')
    return src, src / 'Task01' / 'imagesTr' / 'BRATS_009.nii.gz'


@pytest.mark.parametrize('kind', ['missing src', 'no subjects', 'shape mismatch', 'missing seg', 'missing flair',
                                  'unreadable', 'msd without label'])
def test_errors_are_one_line_naming_the_path(tmp_path, capsys, kind):
    src, path = _broken(tmp_path, kind)
    with pytest.raises(SystemExit) as exc:
        prepare_brats.main(['--src', str(src), '--out', str(tmp_path / 'out'), *FLAGS])
    message = str(exc.value.code)
    assert message.startswith('error: ') and '\n' not in message and str(path) in message
    if kind == 'no subjects':
        assert 'imagesTr' in message and '_seg.nii.gz' in message
    assert not (tmp_path / 'out' / 'BraTS').exists() or os.listdir(tmp_path / 'out' / 'BraTS') == []


def test_help_explains_every_flag(capsys):
    text = help_text(capsys, prepare_brats.main)
    for flag in ('--src', '--out', '--folder', '--modality', '--min_lesion_px', '--min_brain_frac', '--size',
                 '--n_val', '--n_test', '--n_a', '--n_b', '--n_val_slices', '--n_testA', '--n_testB', '--seed',
                 '--overwrite'):
        assert flag in text
