"""Tests for models/otsu_model.py: the intensity maps, Otsu + largest component on synthetic blobs, and
test.py serving a model that needs no checkpoint."""
import json
import os

import numpy as np
import pytest
import torch

import train
from models import create_model
from models.otsu_model import OtsuModel
from options.test_options import TestOptions
from evaluation.metrics import SegmentationScores
from evaluation.postprocess import foreground_mask
from evaluation.selection import apply_rule
from conftest import test_script

SIZE = 48


def _scene(lesion_level, tissue_level, speck=True):
    """uint8 H x W x 3: a black frame, a noisy tissue disc, a lesion disc (and a one-pixel speck of the
    lesion's level elsewhere, which the largest component drops). Returns (raw, lesion mask)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    tissue = (yy - 24) ** 2 + (xx - 24) ** 2 < 21 ** 2
    lesion = (yy - 20) ** 2 + (xx - 28) ** 2 < 6 ** 2
    grey = np.where(tissue, tissue_level, 0) + tissue * rng.normal(0, 6, (SIZE, SIZE))
    grey = np.where(lesion, lesion_level, grey)
    if speck:
        grey[34, 14] = lesion_level
    raw = np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return raw, lesion


def _mask(raw, mode):
    model = create_model(TestOptions().parse(['--model', 'otsu', '--img_size', str(SIZE), '--device', 'cpu']))
    image = torch.from_numpy(raw).permute(2, 0, 1).float()[None] / 127.5 - 1
    out = model.infer(image)
    assert set(out['maps']) == {'dark', 'bright'} and 'score' not in out
    maps = {m: v[0].numpy() for m, v in out['maps'].items()}
    np.testing.assert_allclose(maps['dark'], 1 - maps['bright'], atol=1e-6)
    assert all(v.min() >= 0 and v.max() <= 1 for v in maps.values())
    prob = maps[mode] * foreground_mask(raw)  # as evaluation.inference does
    return apply_rule(dict(OtsuModel.fixed_rule, map_mode=mode), prob)[0]


@pytest.mark.parametrize('mode, lesion_level, tissue_level', [('bright', 230, 110), ('dark', 60, 190)])
def test_otsu_and_largest_component_give_the_blob(mode, lesion_level, tissue_level):
    raw, lesion = _scene(lesion_level, tissue_level)
    scores = SegmentationScores()
    scores.add('blob', _mask(raw, mode), lesion)
    assert scores.mean()['DI'] > 0.95


def test_training_the_otsu_model_is_refused(tiny_argv):
    with pytest.raises(SystemExit) as info:
        train.main(tiny_argv('--model', 'otsu'))
    assert 'training-free' in str(info.value.code) and 'test.py' in str(info.value.code)


def _summary(folder, split):
    with open(os.path.join(folder, 'test', split, 'summary.json')) as handle:
        return json.load(handle)


def test_test_script_serves_otsu_without_a_checkpoint(tiny_test_argv, run_folder):
    test_script.main(tiny_test_argv('--model', 'otsu', name='otsu'))
    folder = run_folder('otsu')
    assert not os.path.exists(os.path.join(folder, 'checkpoints'))
    rule = _summary(folder, 'testA')['selection']
    assert {k: rule[k] for k in ('binarize', 'threshold', 'postprocess')} == OtsuModel.fixed_rule
    assert rule['checkpoint'] is None and rule['step'] == 0 and rule['chosen_on'] == 'val'
    # Val chose the orientation with the better val DI of the fixed rule.
    ranking = {entry['map_mode']: entry['val_DI'] for entry in rule['ranking']}
    assert set(ranking) == {'dark', 'bright'} and rule['map_mode'] == max(ranking, key=ranking.get)
    assert _summary(folder, 'val')['DI'] == pytest.approx(rule['val_DI'])
    assert 'auc' not in _summary(folder, 'testA')  # no image-level score
    assert 0 <= _summary(folder, 'testB')['fp_rate'] <= 1
    for split in ('val', 'testA', 'testB'):
        listing = set(os.listdir(os.path.join(folder, 'test', split)))
        assert {'prob', 'masks', 'overlays'} <= listing and not listing & {'translation', 'cam'}

    test_script.main(tiny_test_argv('--model', 'otsu', '--map_mode', 'dark', name='otsu'))
    assert _summary(folder, 'testA')['selection']['map_mode'] == 'dark'


def test_otsu_map_modes_are_checked(tiny_test_argv):
    with pytest.raises(SystemExit, match="--map_mode fused: this model's maps are dark, bright$"):
        test_script.main(tiny_test_argv('--model', 'otsu', '--map_mode', 'fused', name='otsu'))
