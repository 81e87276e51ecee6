"""predict.py on images: the shipped weights on tiny photographs of every format, outputs, labels, errors."""
import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from conftest import REPO_ROOT, file_hashes, help_text
from models.base_model import CHECKPOINT_FORMAT
from models.weights_file import build_model, read_state
from refinement.crf_utils import CRFParams, dense_crf
from evaluation.inference import predict_split
from evaluation.metrics import confusion_counts, scores_from_counts
from evaluation.selection import apply_rule

pytestmark = pytest.mark.slow  # every test here takes seconds (trains or runs scripts)

WEIGHTS = os.path.join(REPO_ROOT, 'weights')
FAST = ['--device', 'cpu', '--num_threads', '1', '--num_workers', '0', '--crf_workers', '1', '--amp', 'off']


def _photo(height, width, seed=0):
    """uint8 RGB skin with a dark blob left of the centre."""
    rows, cols = np.mgrid[:height, :width]
    blob = ((rows - 0.5 * height) / (0.25 * height)) ** 2 + ((cols - 0.4 * width) / (0.2 * width)) ** 2 <= 1
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, 3))
    return (np.where(blob[..., None], (110.0, 70.0, 50.0), (205.0, 160.0, 140.0)) + noise).clip(0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """A folder of four images in four formats and sizes, a mask among them, and one in a subfolder; labels
    beside it in labels/."""
    folder, labels = tmp_path / 'photos', tmp_path / 'labels'
    (folder / 'more').mkdir(parents=True)
    labels.mkdir()
    Image.fromarray(_photo(200, 300)).save(folder / 'wide.png')
    Image.fromarray(_photo(60, 90, 1)[..., 0]).save(folder / 'grey.jpg')
    Image.fromarray(np.dstack([_photo(64, 64, 2), np.full((64, 64), 200, np.uint8)])).save(folder / 'alpha.png')
    Image.fromarray((_photo(70, 50, 3)[..., 1].astype(np.uint16) * 200)).save(folder / 'deep.tif')
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / 'wide_segmentation.png')  # a mask, not an input
    Image.fromarray(_photo(40, 40, 4)).save(folder / 'more' / 'inner.png')
    for name, (height, width) in (('wide', (200, 300)), ('grey', (60, 90)), ('alpha', (64, 64)), ('deep', (70, 50))):
        label = np.zeros((height, width), np.uint8)
        label[height // 4:height * 3 // 4, width // 5:width * 3 // 5] = 255
        Image.fromarray(label).save(labels / f'{name}_segmentation.png')
    return folder


def _run(weights, source, out, *extra):
    return predict.main(['--weights', os.path.join(WEIGHTS, weights), '--input', str(source), '--output', str(out),
                         *FAST, *map(str, extra)])


def _csv(out):
    with open(out / 'predictions.csv', newline='') as handle:
        return list(csv.DictReader(handle))


def _error(capsys, *argv):
    """The one-line message predict.main exits with."""
    with pytest.raises(SystemExit) as info:
        predict.main([*map(str, argv), *FAST])
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def test_images_of_every_format_get_masks_at_their_size_and_the_input_is_untouched(photos, tmp_path):
    before = file_hashes(photos)
    out = tmp_path / 'out'
    rows = _run('ISIC.pt', photos, out, '--save_prob', '--save_overlay')
    assert file_hashes(photos) == before
    assert sorted(os.path.basename(r['file']) for r in rows) == ['alpha.png', 'deep.tif', 'grey.jpg', 'wide.png']
    for name, size in (('wide', (200, 300)), ('grey', (60, 90)), ('alpha', (64, 64)), ('deep', (70, 50))):
        mask = Image.open(out / f'{name}_mask.png')
        assert mask.mode == 'L' and np.asarray(mask).shape == size and set(np.unique(mask)) <= {0, 255}
        prob = Image.open(out / f'{name}_prob.png')
        assert np.asarray(prob).dtype == np.uint16 and np.asarray(prob).shape == size
        assert np.asarray(Image.open(out / f'{name}_overlay.png')).shape == size + (3,)
    table = _csv(out)
    assert [row['file'] for row in table] == [r['file'] for r in rows] and 'DI' not in table[0]
    for row in table:
        mask = np.asarray(Image.open(row['mask'])) > 0
        assert row['status'] == 'ok' and row['kind'] == 'image' and int(row['lesion_px']) == mask.sum()
        assert float(row['lesion_fraction']) == pytest.approx(mask.mean(), rel=1e-5)
        assert int(row['lesion']) == mask.any() and 0 <= float(row['lesion_score']) <= 1
    nested = _run('ISIC.pt', photos, tmp_path / 'all', '--recursive')
    assert len(nested) == 5 and (tmp_path / 'all' / 'more' / 'inner_mask.png').is_file()


def test_masks_are_the_stored_rule_and_crf_and_scores_come_from_the_labels(photos, tmp_path):
    out = tmp_path / 'out'
    _run('ISIC.pt', photos / 'wide.png', out, '--labels', photos.parent / 'labels')
    state = read_state(os.path.join(WEIGHTS, 'ISIC.pt'))
    rule = state['selection']
    opt = argparse.Namespace(device='cpu', amp='off', channels_last=True, compile=False, is_train=False)
    model = build_model(opt, state, 'ISIC.pt')  # both stages, as test.py serves it
    [item] = predict_split(model, [(str(photos / 'wide.png'), None)], 'reference', batch_size=1,
                           num_workers=0, device='cpu', keep_visuals=True)
    _, prob = apply_rule(rule, item['maps'][rule['map_mode']])
    expected = dense_crf(item['raw'], prob, CRFParams.from_dict(rule['crf']))
    mask = np.asarray(Image.open(out / 'wide_mask.png')) > 0
    assert (mask != expected).mean() < 1e-3  # the U-Net alone vs inside the cascade: float rounding only
    [row] = _csv(out)  # the table holds the files alone; the means are in predictions_summary.json
    summary = json.loads((out / 'predictions_summary.json').read_text())
    label = np.asarray(Image.open(photos.parent / 'labels' / 'wide_segmentation.png')) > 0
    for name, value in scores_from_counts(*confusion_counts(mask, label)).items():
        assert float(row[name]) == pytest.approx(value, rel=1e-5) and summary['mean'][name] == pytest.approx(value)
    assert summary['scored'] == 1 and summary['predicted'] == 1 and summary['complete']
    without_crf = _run('ISIC.pt', photos / 'wide.png', tmp_path / 'plain', '--crf', 'False')
    plain = np.asarray(Image.open(tmp_path / 'plain' / 'wide_mask.png')) > 0
    assert without_crf[0]['status'] == 'ok' and (plain != (prob >= 0.5)).mean() < 1e-3


def test_stage1_file_and_a_stored_gate(photos, tmp_path):
    rows = _run('ISIC_stage1.pt', photos / 'alpha.png', tmp_path / 'stage1')
    assert rows[0]['status'] == 'ok' and (tmp_path / 'stage1' / 'alpha_mask.png').is_file()
    state = torch.load(os.path.join(WEIGHTS, 'ISIC.pt'), weights_only=True)
    state['selection']['gate'] = {'threshold': 1.01}  # no image scores above 1: every mask empty, CRF or not
    gated = tmp_path / 'gated.pt'
    torch.save(state, gated)
    rows = predict.main(['--weights', str(gated), '--input', str(photos), '--output', str(tmp_path / 'g'), *FAST])
    assert len(rows) == 4 and all(row['lesion'] == 0 for row in rows)


def test_unreadable_files_stop_the_run_or_are_skipped_and_listed(photos, tmp_path, capsys):
    truncated = photos / 'cut.jpg'
    Image.fromarray(_photo(200, 300)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])  # its header reads, its pixels do not decode
    message = _error(capsys, '--weights', os.path.join(WEIGHTS, 'ISIC.pt'), '--input', photos,
                     '--output', tmp_path / 'out')
    assert message.startswith(f'error: cannot read image {truncated}: not a readable image (OSError: ')
    assert message.endswith('(replace or remove this file, then run again) (--skip_bad_images True goes on without '
                            'such files)')
    (photos / 'notes.png').write_text('not an image')  # this one fails at its header, before any work
    message = _error(capsys, '--weights', os.path.join(WEIGHTS, 'ISIC.pt'), '--input', photos,
                     '--output', tmp_path / 'out')
    assert message.startswith(f'error: {photos / "notes.png"}: expected a readable image, got ')
    rows = _run('ISIC.pt', photos, tmp_path / 'out', '--skip_bad_images')
    skipped = {os.path.basename(r['file']) for r in rows if r['status'].startswith('skipped: ')}
    assert skipped == {'notes.png', 'cut.jpg'} and sum(r['status'] == 'ok' for r in rows) == 4
    assert {os.path.basename(r['file']) for r in _csv(tmp_path / 'out') if r['status'] != 'ok'} == skipped


def test_problems_are_one_line_errors_naming_the_file_and_the_fix(photos, tmp_path, capsys):
    weights = os.path.join(WEIGHTS, 'ISIC.pt')
    out = tmp_path / 'out'

    def error(*extra, source=photos, weights=weights):
        return _error(capsys, '--weights', weights, '--input', source, '--output', out, *extra)

    assert error(source=tmp_path / 'missing') == (
        f'error: --input {tmp_path / "missing"} not found; pass an image, a NIfTI volume or a folder of them')
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    assert error(source=tmp_path / 'empty') == (
        f'error: {tmp_path / "empty"}: no images (PNG/JPG/BMP/TIFF) or NIfTI volumes (.nii, .nii.gz, BraTS subject '
        f'folders <ID>/<ID>_flair.nii.gz) found; pass --recursive to search its subfolders')
    (tmp_path / 'notes.txt').write_text('hello')
    assert error(source=tmp_path / 'notes.txt').startswith(f'error: {tmp_path / "notes.txt"} is not an image (')
    inside = photos / 'masks'
    assert _error(capsys, '--weights', weights, '--input', photos, '--output', inside) == (
        f'error: --output {inside} is inside --input {photos}; predict.py never writes into its input: pass an '
        f'--output folder elsewhere')
    foreign = tmp_path / 'foreign.pt'
    torch.save({'model': 'resnet', 'state_dict': {}}, foreign)
    assert error(weights=foreign) == (f'error: {foreign} is not a CLTNet-Seg checkpoint or weights file; pass one '
                                      f'written by train.py or from weights/')
    older = tmp_path / 'older.pt'
    torch.save({'format': CHECKPOINT_FORMAT, 'architecture': {'model': 'seg'}, 'nets': {}}, older)
    assert error(weights=older).startswith(f'error: {older} holds no stored choices (map, threshold, CRF)')
    torch.save({'format': CHECKPOINT_FORMAT, 'selection': {'map_mode': 'seg'}}, older)
    assert error(weights=older) == (f'error: {older} was written by an older version (its stored choices lack '
                                    f'binarize, threshold, postprocess); export it again with '
                                    f'python -m tools.export_weights, or pass a file from weights/')
    assert error('--labels', tmp_path / 'empty') == (
        f'error: no label for {photos / "alpha.png"} in {tmp_path / "empty"}: expected alpha_segmentation.png there; '
        f'add it, or leave out --labels')
    _run('ISIC.pt', photos / 'grey.jpg', out)
    other = tmp_path / 'other' / 'grey.jpg'  # another image of the same name: its outputs are not this command's
    other.parent.mkdir()
    Image.fromarray(_photo(60, 90, 5)).save(other)
    assert error(source=other) == (f'error: {out / "grey_mask.png"} exists, made from another input, weights file '
                                   f'or --crf/--largest_3d/--min_brain_frac (predict_manifest.jsonl); pass '
                                   f'--overwrite True to replace it, or another --output')
    assert _run('ISIC.pt', other, out, '--overwrite')[0]['status'] == 'ok'
    (out / 'predict_manifest.jsonl').unlink()  # outputs of unknown origin
    assert error(source=other) == (f'error: {out / "grey_mask.png"} exists (and 2 more); pass --overwrite True to '
                                   f'replace it, or another --output')


def test_help_explains_every_flag_and_the_launcher_passes_arguments_on(capsys):
    text = help_text(capsys, predict.main)
    for flag in ('--weights', '--input', '--output', '--recursive', '--labels', '--allow_other_dataset', '--crf',
                 '--save_prob', '--save_overlay', '--largest_3d', '--overwrite', '--skip_bad_images',
                 '--min_brain_frac', '--refuse_unexpected', '--max_megapixels', '--max_megavoxels',
                 '--min_slice_side', '--batch_size', '--num_workers', '--crf_workers', '--device', '--amp'):
        assert f'  {flag} ' in text, flag
    launched = subprocess.run(['bash', os.path.join(REPO_ROOT, 'start_predict.sh'), '--help'], capture_output=True,
                              text=True, cwd='/', env=dict(os.environ, PYTHON=sys.executable))
    assert launched.returncode == 0 and '--save_overlay' in launched.stdout
