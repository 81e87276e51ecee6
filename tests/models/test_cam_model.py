"""Tests for models/cam_model.py: shapes and ranges, the CAM arithmetic, learning from the weak labels,
and the CAM baseline through train.py and test.py on the tiny dataset."""
import csv
import json
import os

import pytest
import torch

import train
from models import create_model
from models.cam_model import CAMClassifier, CAMModel, class_activation_map
from options.train_options import TrainOptions
from conftest import TINY_FLAGS, test_script, usage_error

SIZE = 32


def _blobs(generator, n, lesion):
    """n dark noisy images (B x 3 x SIZE x SIZE in [-1, 1]); with ``lesion`` each holds a bright disc of
    radius 4 at a random place. Returns (images, discs as bool n x SIZE x SIZE)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing='ij')
    discs = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    if lesion:
        for i in range(n):
            cy, cx = torch.randint(7, SIZE - 7, (2,), generator=generator).tolist()
            discs[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
    images = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.4 - 0.6 + 1.2 * discs[:, None]
    return images.clamp(-1, 1), discs


def _train_model(*flags, steps=4):
    torch.manual_seed(0)
    opt = TrainOptions().parse(['--dataroot', 'unused', '--dataset', 'tiny', '--model', 'cam', *TINY_FLAGS,
                                '--iteration', str(steps), *map(str, flags)])
    return create_model(opt)


def test_infer_gives_a_unit_map_a_score_and_no_translation():
    model = _train_model()
    model.train(False)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = model.infer(images)
    assert set(out) == {'maps', 'score', 'heatmap'} and set(out['maps']) == set(CAMModel.map_modes) == {'cam'}
    cam = out['maps']['cam']
    assert cam.shape == (3, SIZE, SIZE) and cam.dtype == torch.float32
    assert cam.min() >= 0 and cam.max() <= 1 and torch.isfinite(cam).all()
    assert out['score'].shape == (3,) and ((out['score'] >= 0) & (out['score'] <= 1)).all()
    assert torch.equal(out['heatmap'], cam)


def test_cam_is_the_fc_weighted_features_whose_mean_is_the_logit():
    torch.manual_seed(0)
    classifier = CAMClassifier(img_ch=3, ch=4).eval()
    images = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        logits, features = classifier(images)
        assert features.shape == (2, 32, SIZE // 8, SIZE // 8)
        raw = classifier.activation_map(features)
        expected = (features * classifier.fc.weight[0][None, :, None, None]).sum(1)
        torch.testing.assert_close(raw, expected)
        torch.testing.assert_close(raw.mean((1, 2)) + classifier.fc.bias, logits)

        # Hand-built features: channel 0 (positive weight) lit at one cell, channel 1 (negative) elsewhere.
        classifier.fc.weight.zero_()
        classifier.fc.weight[0, 0], classifier.fc.weight[0, 1] = 2.0, -1.0
        features = torch.zeros(1, 32, 4, 4)
        features[0, 0, 1, 2] = 3.0
        features[0, 1] = 1.0
        cam = class_activation_map(classifier, features, (SIZE, SIZE))[0]
    assert cam.min() == 0 and cam.max() == 1  # ReLU, then scaled by the maximum
    peak_y, peak_x = divmod(int(cam.argmax()), SIZE)
    assert 8 <= peak_y < 16 and 16 <= peak_x < 24  # inside the cell (1, 2) of the 4 x 4 grid


def test_training_reduces_the_loss_and_the_cam_finds_the_blob():
    steps = 30
    model = _train_model('--ch', 8, '--lr', 1e-3, '--decay_flag', False, steps=steps)
    model.train()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(1, steps + 1):
        model.set_learning_rate(step)
        model.set_input({'A': _blobs(generator, 4, True)[0], 'B': _blobs(generator, 4, False)[0]})
        model.optimize_parameters()
        losses.append(float(model.get_current_losses()['cls']))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    visuals = model.get_current_visuals()
    assert set(visuals) == set(CAMModel.visual_names)
    assert all(v.shape == (4, 3 if 'real' in k else 1, SIZE, SIZE) for k, v in visuals.items())
    assert all(v.min() >= -1 and v.max() <= 1 for v in visuals.values())

    model.train(False)
    images, discs = _blobs(generator, 6, True)
    out = model.infer(images)
    cam = out['maps']['cam']
    inside = torch.stack([cam[i][discs[i]].mean() for i in range(len(images))])
    outside = torch.stack([cam[i][~discs[i]].mean() for i in range(len(images))])
    # The map is coarse (a 4 x 4 grid at 32 px) and the net young: most, not all, discs must stand out.
    assert (inside > outside).sum() >= len(images) - 1 and inside.mean() > outside.mean() + 0.1, (inside, outside)
    assert out['score'].min() > model.infer(_blobs(generator, 6, False)[0])['score'].max()


def test_train_and_test_scripts_serve_the_cam_model(tiny_argv, tiny_test_argv, run_folder):
    assert train.main(tiny_argv('--model', 'cam', '--iteration', 2, '--save_freq', 1, '--print_freq', 2)) == 0
    folder = run_folder()
    with open(os.path.join(folder, 'loss_log.csv'), newline='') as handle:
        assert next(csv.reader(handle)) == ['step', 'cls']
    state = torch.load(os.path.join(folder, 'checkpoints', 'iter_0000002.pt'), weights_only=False)
    assert list(state['nets']) == ['classifier'] and list(state['optimizers']) == ['cls']
    assert state['architecture'] == {'model': 'cam', 'img_size': 32, 'img_ch': 3, 'ch': 4}
    assert os.listdir(os.path.join(folder, 'samples')) == ['step_0000002.png']

    # test.py takes the model from the checkpoint's architecture: no --model needed.
    test_script.main(tiny_test_argv())
    rule = json.load(open(os.path.join(folder, 'test', 'testA', 'summary.json')))
    assert rule['selection']['map_mode'] == 'cam' and rule['selection']['step'] in (1, 2)
    assert 0 <= rule['auc'] <= 1 and 0 <= rule['DI'] <= 1
    for split in ('val', 'testA', 'testB'):
        listing = os.listdir(os.path.join(folder, 'test', split))
        assert {'prob', 'masks', 'overlays', 'cam'} <= set(listing) and 'translation' not in listing


def test_test_rejects_a_map_mode_the_model_does_not_have(tiny_argv, tiny_test_argv, capsys):
    message = usage_error(capsys, test_script.main, tiny_test_argv('--model', 'cam', '--map_mode', 'no_such_map'))
    # No model has it: the parser refuses it and lists every mode.
    assert '--map_mode must be one of auto, cam, ' in message and "got 'no_such_map'" in message
    assert train.main(tiny_argv('--model', 'cam', '--iteration', 1)) == 0
    with pytest.raises(SystemExit, match="--map_mode attention: this model's maps are cam$"):
        test_script.main(tiny_test_argv('--map_mode', 'attention'))  # the model comes from the checkpoint


def test_pretrained_classifier_keeps_the_cam_identity_at_stride_16_and_records_its_encoder():
    torch.manual_seed(0)
    model = _train_model('--encoder', 'efficientnet-lite0')
    assert model.architecture()['encoder'] == 'efficientnet-lite0'
    assert 'encoder' not in _train_model().architecture()  # scratch files read as they were written
    classifier = model.classifier.eval()
    with torch.no_grad():
        logits, features = classifier(torch.rand(2, 1, 64, 64) * 2 - 1)  # grey: three equal channels
        assert features.shape == (2, 320, 4, 4)
        torch.testing.assert_close(classifier.activation_map(features).mean((1, 2)) + classifier.fc.bias, logits)
