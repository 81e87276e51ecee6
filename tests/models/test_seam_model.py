"""Tests for models/seam_model.py: the equivariance losses vanish for an equivariant map and not for another,
ECR trains the PCM layers and never the classifier, and SEAM through train.py and test.py."""
import os

import pytest
import torch

import train
from models.cam_model import CAMClassifier
from models.seam_model import SEAMNet, affine_transform, siamese_losses
from options.train_options import TrainOptions
from conftest import TINY_FLAGS, usage_error
from test_pcm_model import check_test_script_serves

SIZE = 16


def _blocky_images(n=3):
    """n x 3 x SIZE x SIZE images constant over 2 x 2 blocks: halving them (bilinear) is exact."""
    blocks = torch.rand(n, 3, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return blocks.repeat_interleave(2, 2).repeat_interleave(2, 3)


def _identity_branch(images):
    """An equivariant 'network': its CAM and PCM map are the image's first channel itself."""
    return torch.zeros(len(images)), images[:, :1], images[:, :1]


def _fixed_branch(images):
    """A map that ignores the image (a left-to-right ramp): flipping the image does not flip it."""
    ramp = torch.linspace(0, 1, images.shape[-1]).expand(len(images), 1, images.shape[-2], -1)
    return torch.zeros(len(images)), ramp, ramp


def test_affine_transform_halves_and_flips():
    images = _blocky_images(1)
    moved = affine_transform(images, 0.5, True)
    assert moved.shape == (1, 3, SIZE // 2, SIZE // 2)
    torch.testing.assert_close(moved, images[..., ::2, ::2].flip(-1))
    torch.testing.assert_close(affine_transform(images, 0.5, False), images[..., ::2, ::2])


@pytest.mark.parametrize('flip', [True, False])
def test_the_equivariance_losses_vanish_for_an_equivariant_map(flip):
    labels = torch.ones(3)
    losses, cam, refined = siamese_losses(_identity_branch, _blocky_images(), labels, 0.5, flip, 0.2)
    assert float(losses['er']) < 1e-6 and float(losses['ecr']) < 1e-6
    assert cam.shape == refined.shape == (3, 1, SIZE, SIZE) and cam.min() >= 0 and cam.max() <= 1


def test_the_equivariance_losses_are_positive_for_a_map_that_does_not_follow_the_image():
    labels = torch.ones(3)
    losses, _, _ = siamese_losses(_fixed_branch, _blocky_images(), labels, 0.5, True, 0.2)
    assert float(losses['er']) > 0.2 and float(losses['ecr']) > 0.2
    # A normal image's lesion maps count as zero (SEAM's label mask): no equivariance loss from it.
    losses, _, _ = siamese_losses(_fixed_branch, _blocky_images(), torch.zeros(3), 0.5, True, 0.2)
    assert float(losses['er']) == 0 and float(losses['ecr']) == 0


def test_ecr_trains_the_pcm_layers_and_never_the_classifier():
    torch.manual_seed(1)  # a net whose lesion CAM is positive somewhere (an all-negative one gives ER no gradient)
    net = SEAMNet(CAMClassifier(img_ch=3, ch=4), img_ch=3)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    losses, _, _ = siamese_losses(net, images, torch.tensor([1.0, 0.0]), 0.5, True, 0.2)
    assert losses['er'].item() > 0 and losses['ecr'].item() > 0
    losses['ecr'].backward(retain_graph=True)
    assert all(p.grad is None for p in net.classifier.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (net.mix.weight, net.project_deep.weight))
    losses['er'].backward()  # ER trains the classifier
    assert net.classifier.fc.weight.grad.abs().sum() > 0


def test_seam_net_refines_its_own_cam_on_the_feature_grid():
    torch.manual_seed(0)
    net = SEAMNet(CAMClassifier(img_ch=3, ch=4), img_ch=3).eval()
    with torch.no_grad():
        logits, cam, refined = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert logits.shape == (2,) and cam.shape == refined.shape == (2, 1, 4, 4)
    # PCM averages the (ReLU'd, max-divided) CAM: its values stay in [0, 1].
    assert refined.min() >= 0 and refined.max() <= 1 + 1e-5


def test_seam_flags_are_checked(capsys):
    base = ['--dataroot', 'unused', '--dataset', 'tiny', '--model', 'seam', *TINY_FLAGS]
    opt = TrainOptions().parse(base)
    assert (opt.seam_scale, opt.seam_flip, opt.seam_ecr_top) == (0.5, True, 0.2)
    assert '--seam_scale must be between 0.1 and 1.0, got 0.0' in usage_error(
        capsys, TrainOptions().parse, base + ['--seam_scale', '0'])


def test_train_and_test_scripts_serve_the_seam_model(tiny_argv, tiny_test_argv, run_folder):
    assert train.main(tiny_argv('--model', 'seam', '--iteration', 2, '--save_freq', 1, '--print_freq', 2)) == 0
    folder = run_folder()
    with open(os.path.join(folder, 'loss_log.csv')) as handle:
        assert handle.readline().strip() == 'step,cls,er,ecr'
    state = torch.load(os.path.join(folder, 'checkpoints', 'iter_0000002.pt'), weights_only=False)
    assert list(state['nets']) == ['seam'] and list(state['optimizers']) == ['seam']

    check_test_script_serves(folder, tiny_test_argv)
