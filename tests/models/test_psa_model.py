"""Tests for models/psa_model.py: the affinity labels (the uncertain band and the radius), PSA's balanced
loss, the affinities and the walk they drive, and a tiny CAM run followed by a PSA run through train.py and
test.py."""
import json
import math
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

import train
from models import create_model
from models.psa_model import (UNCERTAIN, PSAModel, balanced_affinity_loss, confident_regions, dense_affinity,
                              pair_affinities, pair_labels, radius_pairs)
from options.train_options import TrainOptions
from conftest import TINY_FLAGS, test_script

U = UNCERTAIN


def _labelled(regions, radius):
    """{(i, j): 'fg' | 'bg' | 'neg' | None} of every pair within ``radius`` of the one map ``regions``."""
    height, width = regions.shape
    pairs = radius_pairs(height, width, radius)
    labels = pair_labels(regions[None], pairs)
    kinds = {}
    for index, (i, j) in enumerate(zip(*(p.tolist() for p in pairs))):
        found = [kind for kind in ('fg', 'bg', 'neg') if labels[kind][0, index]]
        assert len(found) <= 1, (i, j, found)
        kinds[(i, j)] = found[0] if found else None
    return kinds


def test_confident_regions_come_from_the_two_background_powers_and_normal_images_are_background():
    # At alpha 4 a CAM beats (1 - CAM)^4 above ~0.28; at alpha 24, (1 - CAM)^24 beats it below ~0.09.
    cam = torch.tensor([[[0.9, 0.3, 0.2, 0.05]]]).repeat(2, 1, 1)
    regions = confident_regions(cam, torch.tensor([True, False]), alpha_low=4, alpha_high=24)
    assert regions[0].tolist() == [[1, 1, U, 0]]
    assert regions[1].tolist() == [[0, 0, 0, 0]]  # a normal image: background, however bright its CAM


def _at(y, x):
    return 4 * y + x  # the flat index of (y, x) on a map 4 wide


def test_affinity_labels_ignore_the_uncertain_band_and_the_pairs_beyond_the_radius():
    regions = torch.tensor([[1, 1, U, 0],
                            [1, 1, U, 0],
                            [0, 0, 0, 0]])
    kinds = _labelled(regions, radius=1.5)
    assert kinds[(_at(0, 0), _at(0, 1))] == 'fg'   # both confident lesion: 1
    assert kinds[(_at(2, 0), _at(2, 1))] == 'bg'   # both confident background: 1
    assert kinds[(_at(1, 1), _at(2, 1))] == 'neg'  # lesion beside background: 0
    assert kinds[(_at(1, 0), _at(2, 1))] == 'neg'  # a diagonal neighbour, within 1.5
    assert kinds[(_at(0, 1), _at(0, 2))] is None   # one position in the band: ignored
    assert kinds[(_at(1, 2), _at(2, 3))] is None
    assert kinds[(_at(0, 2), _at(1, 2))] is None   # both in the band
    flat = regions.flatten()
    for (i, j), kind in kinds.items():
        assert math.dist(divmod(i, 4), divmod(j, 4)) <= 1.5 and i < j
        assert (kind is None) == bool(flat[i] == U or flat[j] == U), (i, j)
    assert (_at(0, 0), _at(2, 0)) not in kinds  # distance 2: no label at all
    assert len(kinds) == len(set(kinds))


def test_balanced_loss_is_lower_for_affinities_that_match_the_labels():
    generator = torch.Generator().manual_seed(0)
    kind = torch.randint(0, 4, (2, 300), generator=generator)  # 0 fg, 1 bg, 2 neg, 3 ignored
    labels = {'fg': kind == 0, 'bg': kind == 1, 'neg': kind == 2}
    matching = torch.where(kind == 2, 0.05, 0.95)
    wrong = 1 - matching
    losses = [balanced_affinity_loss(a, labels)[0] for a in (matching, torch.full_like(matching, 0.5), wrong)]
    assert losses[0] < losses[1] < losses[2], losses
    # Ignored pairs do not count; each kind is a mean, so a rare kind weighs as much as a common one.
    changed = torch.where(kind == 3, torch.rand(2, 300, generator=generator), matching)
    torch.testing.assert_close(balanced_affinity_loss(changed, labels)[0], losses[0])
    few_fg = {**labels, 'fg': labels['fg'] & (torch.arange(300) < 20)}
    _, parts = balanced_affinity_loss(torch.where(kind == 0, 0.5, matching), few_fg)
    torch.testing.assert_close(parts['fg'], torch.tensor(-math.log(0.5 + 1e-5)), rtol=1e-4, atol=1e-4)


def test_affinities_are_feature_distances_and_the_walk_keeps_the_lesion_on_its_side():
    features = torch.zeros(1, 3, 4, 6)
    features[0, :, :, 3:] = 5.0  # two regions: left and right halves with distant features
    features[0, 0, 0, 0] = 0.6
    pairs = radius_pairs(4, 6, 2)
    values = pair_affinities(features, pairs)
    index = next(k for k, (i, j) in enumerate(zip(*pairs)) if (i, j) == (0, 1))
    torch.testing.assert_close(values[0, index], torch.exp(torch.tensor(-0.2)))  # mean |0.6 - 0| over 3 channels
    dense = dense_affinity(features, 2)[0]
    assert torch.equal(dense, dense.T) and (dense.diagonal() == 1).all()
    assert dense[0, 23] == 0  # beyond the radius
    cam = torch.zeros(1, 4, 6)
    cam[0, :, :3] = 0.8  # the lesion: the left half...
    cam[0, 1, 1] = 0.0   # ...but for a hole
    cam[0, 2, 4] = 0.3   # and a stray response on the right
    opt = SimpleNamespace(psa_beta=8.0, psa_steps=64, psa_radius=2)
    walked = PSAModel.propagate(SimpleNamespace(opt=opt), cam, features)
    assert set(walked) == {'psa', 'psa-t4', 'psa-t16', 'psa-t64'} and torch.equal(walked['psa'], walked['psa-t64'])
    psa = walked['psa'][0]
    # The walk fills the hole from its region and averages the stray response away in its own.
    assert psa[:, :3].min() > 0.9 and psa[:, 3:].max() < 0.05, psa
    assert walked['psa-t4'][0, 1, 1] < psa[1, 1]  # a short walk has filled the hole less


def _cam_and_psa_runs(tiny_argv, run_folder, monkeypatch, tmp_path):
    """Train a tiny CAM run, then a PSA run on its step-2 checkpoint given as a path relative to the working
    folder; returns (that path, the PSA run's folder)."""
    monkeypatch.chdir(tmp_path)
    assert train.main(tiny_argv('--model', 'cam', '--iteration', 2, name='cam')) == 0
    cam_file = os.path.relpath(os.path.join(run_folder('cam'), 'checkpoints', 'iter_0000002.pt'))
    assert not os.path.isabs(cam_file)
    assert train.main(tiny_argv('--model', 'psa', '--psa_cam_weights', cam_file, '--iteration', 2,
                                '--save_freq', 1, '--print_freq', 2, '--psa_radius', 2, '--psa_steps', 8,
                                name='psa')) == 0
    return cam_file, run_folder('psa')


@pytest.mark.slow
def test_train_and_test_scripts_serve_a_psa_run_without_its_cam_file(tiny_argv, tiny_test_argv, run_folder,
                                                                     monkeypatch, tmp_path):
    cam_file, folder = _cam_and_psa_runs(tiny_argv, run_folder, monkeypatch, tmp_path)
    state = torch.load(os.path.join(folder, 'checkpoints', 'iter_0000002.pt'), weights_only=False)
    assert list(state['nets']) == ['classifier', 'affinity'] and list(state['optimizers']) == ['aff']
    assert state['options']['psa_cam_weights'] == cam_file  # recorded as given: relative stays relative
    assert state['architecture'] == {'model': 'psa', 'img_size': 32, 'img_ch': 3, 'ch': 4, 'psa_radius': 2,
                                     'psa_beta': 8.0, 'psa_steps': 8}
    cam_state = torch.load(cam_file, weights_only=False)
    for key, value in cam_state['nets']['classifier'].items():  # frozen: the CAM as it was trained
        assert torch.equal(state['nets']['classifier'][key], value), key
    with open(os.path.join(folder, 'loss_log.csv')) as handle:
        assert handle.readline().strip() == 'step,fg,bg,neg,aff'

    with pytest.raises(SystemExit, match=r'holds a --model psa file, not a CAM; pass a checkpoint of a --model cam'):
        train.main(tiny_argv('--model', 'psa', '--psa_cam_weights', os.path.join(folder, 'checkpoints',
                                                                              'iter_0000001.pt'), name='psa2'))
    shutil.rmtree(run_folder('cam'))  # the run's checkpoints hold the classifier: test.py needs no CAM file
    test_script.main(tiny_test_argv(name='psa'))
    with open(os.path.join(folder, 'test', 'testA', 'summary.json')) as handle:
        rule = json.load(handle)
    assert rule['selection']['map_mode'] in PSAModel.map_modes and 0 <= rule['DI'] <= 1
    test_script.main(tiny_test_argv('--map_mode', 'psa', '--reselect', name='psa'))
    with open(os.path.join(folder, 'test', 'testA', 'summary.json')) as handle:
        assert json.load(handle)['selection']['map_mode'] == 'psa'


def test_a_missing_or_wrong_cam_file_is_one_line_naming_it(tiny_argv, run_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r'^error: --model psa needs --psa_cam_weights FILE: pass a checkpoint'):
        train.main(tiny_argv('--model', 'psa', name='psa'))
    with pytest.raises(SystemExit, match=r'^error: --psa_cam_weights no/cam.pt not found; pass a checkpoint of a '
                                         r'--model cam run \(<run>/checkpoints/iter_\*.pt'):
        train.main(tiny_argv('--model', 'psa', '--psa_cam_weights', 'no/cam.pt', name='psa'))
    assert train.main(tiny_argv('--model', 'cam', '--iteration', 1, name='cam')) == 0
    cam_file = os.path.join(run_folder('cam'), 'checkpoints', 'iter_0000001.pt')
    with pytest.raises(SystemExit, match=rf'^error: --psa_cam_weights {cam_file} is a CAM of --ch 4; pass --ch 4 '):
        train.main(tiny_argv('--model', 'psa', '--psa_cam_weights', cam_file, '--ch', 8, name='psa'))
    with open('notes.txt', 'w') as handle:
        handle.write('not a checkpoint')
    with pytest.raises(SystemExit, match=r'^error: notes.txt: cannot be read'):
        train.main(tiny_argv('--model', 'psa', '--psa_cam_weights', 'notes.txt', name='psa'))


def test_pretrained_affinity_network_features_at_stride_8_on_a_pretrained_cam(tmp_path):
    def model(*flags):
        torch.manual_seed(0)
        return create_model(TrainOptions().parse(['--dataroot', 'unused', '--dataset', 'tiny', *TINY_FLAGS,
                                                  '--encoder', 'efficientnet-lite0', *map(str, flags)]))
    cam_file = str(tmp_path / 'cam.pt')
    model('--model', 'cam').save(cam_file)
    psa = model('--model', 'psa', '--psa_cam_weights', cam_file, '--psa_steps', 8)
    assert psa.architecture()['encoder'] == 'efficientnet-lite0'
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    psa.set_input({'A': images[:1], 'B': images[1:]})
    psa.optimize_parameters()
    assert torch.isfinite(psa.loss_aff) and psa.regions_A.shape == (1, 1, 64, 64)
    assert not any(p.requires_grad for p in psa.classifier.parameters())
    psa.train(False)
    assert psa.affinity(images).shape == (2, 448, 8, 8)
    out = psa.infer(images)
    assert set(out['maps']) == {'cam', 'psa', 'psa-t4', 'psa-t16', 'psa-t64'}
    assert all(m.shape == (2, 64, 64) for m in out['maps'].values())
    assert all(0 <= m.min() and m.max() <= 1 for m in out['maps'].values())
