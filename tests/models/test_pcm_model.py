"""Tests for models/pcm.py (SEAM's pixel correlation module) and models/pcm_model.py (the CAM classifier
served with PCM-refined maps): a map consistent with its features is left unchanged, one that is not is
smoothed within each feature region and never across, and the model through train.py and test.py."""
import json
import os

import torch

import train
from models.cam_model import CAMClassifier, PretrainedCAMClassifier
from models.pcm import classifier_stages, pixel_correlation, stage_channels
from models.pcm_model import correlation_features
from conftest import test_script


def _regions():
    """A 6 x 6 grid split into three regions (left third, top and bottom of the rest): their ids."""
    ids = torch.zeros(6, 6, dtype=torch.long)
    ids[:3, 2:], ids[3:, 2:] = 1, 2
    return ids


def _one_hot(ids, channels=5):
    """Features 1 x channels x h x w, one-hot of the region ids (the channels beyond them stay zero)."""
    return torch.nn.functional.one_hot(ids, channels).permute(2, 0, 1)[None].float()


def test_pcm_leaves_a_map_constant_per_feature_region_unchanged():
    ids = _regions()
    values = torch.tensor([0.9, 0.1, 0.4])
    cam = values[ids][None, None]  # constant per region
    out = pixel_correlation(cam, _one_hot(ids))
    torch.testing.assert_close(out, cam)
    # Two maps at once (lesion and its background) and a scaled feature: still unchanged.
    both = torch.cat([cam, 1 - cam], 1)
    torch.testing.assert_close(pixel_correlation(both, 3 * _one_hot(ids)), both)


def test_pcm_averages_within_a_region_and_never_across():
    ids = _regions()
    generator = torch.Generator().manual_seed(0)
    cam = torch.rand(1, 1, 6, 6, generator=generator)
    out = pixel_correlation(cam, _one_hot(ids))[0, 0]
    for region in range(3):
        inside = ids == region
        # Every position becomes its region's mean: the other regions' scores do not leak in.
        torch.testing.assert_close(out[inside], cam[0, 0][inside].mean().expand(int(inside.sum())))


def test_pcm_weighs_partly_similar_positions_by_their_cosine_and_cuts_negative_ones():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]).T.reshape(1, 2, 1, 3)
    cam = torch.tensor([1.0, 0.0, 5.0]).reshape(1, 1, 1, 3)
    out = pixel_correlation(cam, features)[0, 0, 0]
    cos = 2 ** -0.5
    # Position 0 sees itself (1) and position 1 (cos 45 degrees); position 2 is opposite (ReLU: 0).
    torch.testing.assert_close(out, torch.tensor([1 / (1 + cos), cos / (1 + cos), 5.0]))


def test_correlation_features_keep_regions_apart_after_centring():
    ids = _regions()
    image = _one_hot(ids, 3) * 2 - 1  # a 3-channel image, one colour per region
    stages = [_one_hot(ids, 4), 2 * _one_hot(ids, 6), torch.zeros(1, 8, 6, 6)]
    cam = torch.tensor([0.9, 0.1, 0.4])[ids][None, None]
    features = correlation_features(image, stages, (6, 6))
    assert features.shape == (1, 3 + 4 + 6, 6, 6)
    torch.testing.assert_close(pixel_correlation(cam, features), cam)


def test_classifier_stages_end_in_the_classifiers_own_logits_and_features():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for classifier in (CAMClassifier(img_ch=3, ch=4).eval(), PretrainedCAMClassifier(pretrained=False).eval()):
        with torch.no_grad():
            logits, features = classifier(images)
            stage_logits, stages = classifier_stages(classifier, images)
        torch.testing.assert_close(stage_logits, logits)
        assert torch.equal(stages[-1], features)
        assert tuple(stage.shape[1] for stage in stages) == tuple(stage_channels(classifier))


def test_train_and_test_scripts_serve_the_pcm_model(tiny_argv, tiny_test_argv, run_folder):
    assert train.main(tiny_argv('--model', 'pcm', '--iteration', 2, '--save_freq', 1, '--print_freq', 2)) == 0
    folder = run_folder()
    state = torch.load(os.path.join(folder, 'checkpoints', 'iter_0000002.pt'), weights_only=False)
    assert list(state['nets']) == ['classifier']
    assert state['architecture'] == {'model': 'pcm', 'img_size': 32, 'img_ch': 3, 'ch': 4}

    check_test_script_serves(folder, tiny_test_argv)


def check_test_script_serves(folder, tiny_test_argv):
    """test.py on a tiny run of 2 steps with maps 'cam' and 'pcm': it chooses among them on val and writes
    every split's maps (also used by test_seam_model.py)."""
    test_script.main(tiny_test_argv())
    with open(os.path.join(folder, 'test', 'selection.json')) as handle:
        selection = json.load(handle)['selection']
    assert selection['map_mode'] in ('cam', 'pcm') and selection['step'] in (1, 2)
    for split in ('val', 'testA', 'testB'):
        assert {'prob', 'masks', 'overlays', 'cam'} <= set(os.listdir(os.path.join(folder, 'test', split)))
