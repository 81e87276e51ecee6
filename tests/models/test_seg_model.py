"""Tests for models/seg_model.py (the stage-2 U-Net) and data/pseudo_dataset.py (its training items)."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import usage_error
from data.pseudo_dataset import MaskedImage, PseudoMaskDataset
from models.base_model import CheckpointError
from models.seg_model import SegModel, UNet, weighted_losses
from options.train_options import TrainOptions


@pytest.mark.parametrize('size', [32, 36, 44])
def test_unet_keeps_the_input_size(size):
    torch.manual_seed(0)
    out = UNet(img_ch=3, ch=4)(torch.randn(2, 3, size, size))
    assert out.shape == (2, 1, size, size)


def test_zero_weight_pixels_do_not_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    weight = torch.ones_like(target)
    weight[:, :, :4] = 0
    flipped = target.clone()
    flipped[:, :, :4] = 1 - flipped[:, :, :4]
    assert torch.equal(torch.stack(weighted_losses(logits, target, weight)),
                       torch.stack(weighted_losses(logits, flipped, weight)))
    changed = torch.stack(weighted_losses(logits, flipped, torch.ones_like(target)))
    assert not torch.equal(torch.stack(weighted_losses(logits, target, torch.ones_like(target))), changed)


def test_dice_loss_is_zero_only_for_a_perfect_prediction():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert weighted_losses(perfect, target, torch.ones_like(target))[1] < 1e-3
    assert weighted_losses(-perfect, target, torch.ones_like(target))[1] > 0.9


def _seg_opt(tmp_path, *extra):
    return TrainOptions().parse(['--stage', '2', '--dataroot', str(tmp_path), '--img_size', '32', '--ch', '4',
                                 '--device', 'cpu', '--amp', 'off', '--batch_size', '2', *extra])


def test_stage_two_defaults_and_model_check(tmp_path, capsys):
    opt = _seg_opt(tmp_path)
    assert (opt.model, opt.name, opt.lr, opt.iteration) == ('seg', 'stage2', 1e-3, 2000)
    assert _seg_opt(tmp_path, '--lr', '0.01', '--name', 'mine').lr == 0.01
    refusal = 'error: --model seg trains only in stage 2 (--stage 2), on pseudo-masks; stage 2 trains only --model seg'
    assert f'{refusal} (got --stage 1 --model seg)' in usage_error(capsys, TrainOptions().parse,
                                                                    ['--model', 'seg', '--dataroot', str(tmp_path)])
    assert f'{refusal} (got --stage 2 --model cltnet)' in usage_error(capsys, _seg_opt, tmp_path, '--model', 'cltnet')


def _square_batch(n):
    """Images with a bright square and its mask (the lesion), plus all-dark normal images."""
    images_A = -torch.ones(n, 3, 32, 32)
    target_A = torch.zeros(n, 1, 32, 32)
    for i in range(n):
        top = 4 + 6 * i
        images_A[i, :, top:top + 10, 8:20] = 1
        target_A[i, :, top:top + 10, 8:20] = 1
    return {'A': images_A, 'B': -torch.ones(n, 3, 32, 32), 'A_target': target_A,
            'B_target': torch.zeros(n, 1, 32, 32), 'A_weight': torch.ones(n, 1, 32, 32),
            'B_weight': torch.ones(n, 1, 32, 32)}


STEPS = 100


def _train_on(model, batch):
    """(loss after the first step, loss after STEPS more) of ``model`` trained on ``batch``."""
    model.set_input(batch)
    model.optimize_parameters()
    first = float((model.loss_bce + model.loss_dice).detach())
    for _ in range(STEPS):
        model.optimize_parameters()
    return first, float((model.loss_bce + model.loss_dice).detach())


@pytest.mark.slow
def test_training_learns_the_masks_and_infer_serves_them(tmp_path):
    torch.manual_seed(0)
    model = SegModel(_seg_opt(tmp_path, '--lr', '0.01'))
    batch = _square_batch(2)
    first, last = _train_on(model, batch)
    assert last < 0.2 * first
    model.train(False)
    out = model.infer(batch['A'])
    prob = out['maps']['seg']
    assert prob.shape == (2, 32, 32) and 0 <= prob.min() and prob.max() <= 1
    dice = 2 * (prob.round() * batch['A_target'][:, 0]).sum() / (prob.round().sum() + batch['A_target'].sum())
    assert dice > 0.9
    assert (out['score'] > model.infer(batch['B'])['score']).all()


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SegModel(_seg_opt(tmp_path))
    model.save(str(tmp_path / 'seg.pt'))
    other = SegModel(_seg_opt(tmp_path))
    other.load(str(tmp_path / 'seg.pt'))
    for a, b in zip(model.seg.parameters(), other.seg.parameters()):
        assert torch.equal(a, b)


def _write(path, array):
    Image.fromarray(array).save(path)


def test_augmentation_moves_mask_and_weights_with_the_image(tmp_path):
    image = np.zeros((48, 48, 3), np.uint8)
    image[10:30, 5:25] = 255
    mask = (image[..., 0] > 0).astype(np.uint8) * 255
    confidence = np.full((48, 48), 255, np.uint8)
    confidence[:, 40:] = 0  # uncertain strip: weight 0 there
    for name, array in (('img.png', image), ('mask.png', mask), ('conf.png', confidence)):
        _write(tmp_path / name, array)
    item = MaskedImage(str(tmp_path / 'img.png'), str(tmp_path / 'mask.png'), str(tmp_path / 'conf.png'), 2.0)
    dataset = PseudoMaskDataset([item], img_size=32, min_confidence=0.5)
    for seed in range(6):
        torch.manual_seed(seed)
        sample = dataset[0]
        bright = sample['image'].mean(0) > 0
        agree = (bright == (sample['target'][0] > 0.5)).float().mean()
        assert agree > 0.97
        assert set(torch.unique(sample['weight']).tolist()) == {0.0, 2.0}


def test_mask_of_another_size_is_refused(tmp_path):
    _write(tmp_path / 'img.png', np.zeros((40, 40, 3), np.uint8))
    _write(tmp_path / 'mask.png', np.zeros((20, 20), np.uint8))
    dataset = PseudoMaskDataset([MaskedImage(str(tmp_path / 'img.png'), str(tmp_path / 'mask.png'))], 32)
    with pytest.raises(ValueError, match='mask.png is 20x20'):
        dataset[0]


def test_seg_flips_is_the_flip_average_and_flip_equivariant(tmp_path):
    torch.manual_seed(0)
    model = SegModel(_seg_opt(tmp_path))
    model.train(False)
    images = torch.rand(2, 3, 32, 24) * 2 - 1
    out = model.infer(images)
    plain = {dims: model.infer(images.flip(dims) if dims else images)['maps']['seg']
             for dims in [(), (-1,), (-2,), (-2, -1)]}
    expected = sum(prob.flip(dims) if dims else prob for dims, prob in plain.items()) / 4
    assert torch.allclose(out['maps']['seg-flips'], expected, atol=1e-6)
    assert torch.allclose(out['maps']['seg'], plain[()], atol=1e-6)
    assert not torch.allclose(out['maps']['seg-flips'], out['maps']['seg'], atol=1e-3)
    flipped = model.infer(images.flip(-1))['maps']['seg-flips']
    assert torch.allclose(flipped, out['maps']['seg-flips'].flip(-1), atol=1e-6)
    assert torch.equal(out['score'], plain[()].flatten(1).max(1)[0])


@pytest.mark.slow
def test_pretrained_encoder_learns_and_its_file_records_it(tmp_path):
    torch.manual_seed(0)
    opt = _seg_opt(tmp_path, '--lr', '0.01', '--encoder', 'efficientnet-lite0', '--ch', '4')
    model = SegModel(opt)
    assert model.architecture()['encoder'] == 'efficientnet-lite0'
    first, last = _train_on(model, _square_batch(2))
    assert last < 0.3 * first
    model.save(str(tmp_path / 'seg.pt'))
    # Served (not training): built without the ImageNet weights, every weight from the file.
    served = SegModel(argparse.Namespace(**dict(vars(opt), is_train=False)))
    served.load(str(tmp_path / 'seg.pt'))
    for a, b in zip(model.seg.state_dict().values(), served.seg.state_dict().values()):
        assert torch.equal(a, b)
    # A scratch U-Net's file keeps the architecture record it always had, and refuses the other encoder.
    assert 'encoder' not in SegModel(_seg_opt(tmp_path)).architecture()
    with pytest.raises(CheckpointError, match='encoder'):
        SegModel(_seg_opt(tmp_path, '--ch', '4')).load(str(tmp_path / 'seg.pt'))
