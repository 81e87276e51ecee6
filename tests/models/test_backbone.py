"""The pretrained encoder: the installed ImageNet weights load and still classify, and the features
any model builds on have the promised shapes and input scaling."""
import numpy as np
import pytest
import torch
from skimage import data, transform

from models.backbone import PretrainedEncoder, efficientnet_lite0, imagenet_input


@pytest.mark.parametrize('image, imagenet_class', [(data.chelsea, 285), (data.coffee, 967)])
def test_installed_weights_classify_bundled_photos(image, imagenet_class):
    # A broken install (missing or random weights) fails here instead of silently training from noise:
    # scikit-image's cat photo is class 285 (Egyptian cat), its coffee cup 967 (espresso).
    torch.manual_seed(0)
    net = efficientnet_lite0().eval()
    pixels = transform.resize(image(), (224, 224), anti_aliasing=True)
    batch = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None].float()
    with torch.no_grad():
        probs = net(imagenet_input(batch * 2 - 1)).softmax(1)[0]
    assert probs.argmax().item() == imagenet_class
    assert probs.max().item() > 0.5


def test_grey_images_are_three_equal_channels_in_the_weights_scaling():
    grey = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    scaled = imagenet_input(grey)
    assert scaled.shape == (1, 3, 4, 4)
    assert torch.equal(scaled[:, 0], scaled[:, 2])
    # [-1, 1] -> x in [0, 1] -> (255 x - 127) / 128: black -127/128, white 1.
    assert scaled.min().item() == pytest.approx(-127 / 128)
    assert scaled.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize('last_stride, deepest', [(2, 32), (1, 16)])
def test_feature_strides_and_channels(last_stride, deepest):
    encoder = PretrainedEncoder(pretrained=False, last_stride=last_stride).eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 1, 64, 96))
    assert encoder.strides[-1] == deepest
    assert [f.shape[1] for f in features] == list(encoder.channels)
    assert [(f.shape[2], f.shape[3]) for f in features] == [(64 // s, 96 // s) for s in encoder.strides]


@pytest.mark.parametrize('put_in_training', [True, False])  # False: as built, before any .train() call
def test_batchnorm_keeps_imagenet_statistics_while_training(put_in_training):
    encoder = PretrainedEncoder(pretrained=False)
    if put_in_training:
        encoder.train()
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    encoder(torch.randn(2, 3, 32, 32))
    assert torch.equal(norms[0].running_mean, before)
