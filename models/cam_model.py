"""CAM baseline: an image classifier trained on the weak labels, its class activation map as lesion map.

The classifier tells lesion images (domain A, label 1) from normal ones (domain B, label 0): a small
ResNet-18-like network, from scratch, whose width is ``--ch``, ending in global average pooling and
one linear unit (the lesion logit). Its class activation map (Zhou et al. 2016, "Learning Deep
Features for Discriminative Localization") is the last convolutional features weighted by that
unit's weights: the per-position contributions whose average is the logit.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import PretrainedEncoder
from .base_model import BaseModel, _unwrap


def _norm(channels):
    # GroupNorm: training batches hold one or two images per domain, too few for BatchNorm statistics.
    return nn.GroupNorm(math.gcd(8, channels), channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a (projected when needed) shortcut."""

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), _norm(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), _norm(out_ch))
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _norm(out_ch))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class CAMClassifier(nn.Module):
    """Images B x img_ch x H x W -> (lesion logit B, features B x 8ch x H/8 x W/8).

    Four stages of two basic blocks (widths ch, 2ch, 4ch, 8ch) after a stride-2 stem; the last stage
    keeps stride 1, so the activation map has 1/8 of the input resolution (ResNet-18's is 1/32).
    """

    def __init__(self, img_ch=3, ch=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(img_ch, ch, 3, 2, 1, bias=False), _norm(ch), nn.ReLU(inplace=True))
        stages, width = [], ch
        for out_ch, stride in ((ch, 1), (2 * ch, 2), (4 * ch, 2), (8 * ch, 1)):
            stages += [BasicBlock(width, out_ch, stride), BasicBlock(out_ch, out_ch)]
            width = out_ch
        self.features = nn.Sequential(*stages)
        self.fc = nn.Linear(width, 1)

    def forward(self, images):
        features = self.features(self.stem(images))
        return self.fc(features.mean((2, 3)))[:, 0], features

    def activation_map(self, features):
        """CAM: sum_k w_k f_k(x, y) over the feature channels, B x h x w (its spatial mean plus the
        bias is the logit)."""
        return torch.einsum('bkhw,k->bhw', features.float(), self.fc.weight[0].float())


def block_outputs(stem, blocks, images, taps):
    """The outputs of a CAMClassifier's ``blocks`` (its ``features``) at the indices ``taps``, after ``stem``."""
    x, found = stem(images), []
    for index, block in enumerate(blocks):
        x = block(x)
        if index in taps:
            found.append(x)
    return found


class ScratchTaps(nn.Module):
    """A fresh CAMClassifier's layers (--encoder scratch) giving its block outputs at ``taps``, for methods that
    build their own network from them; ``channels``: those outputs' widths (two blocks per stage of ch, 2ch,
    4ch, 8ch)."""

    def __init__(self, img_ch, ch, taps):
        super().__init__()
        net = CAMClassifier(img_ch=img_ch, ch=ch)
        self.stem, self.blocks, self.taps = net.stem, net.features, tuple(taps)
        self.channels = tuple(ch * 2 ** (index // 2) for index in self.taps)

    def forward(self, images):
        return block_outputs(self.stem, self.blocks, images, self.taps)


class PretrainedCAMClassifier(CAMClassifier):
    """The same classifier on ImageNet-pretrained EfficientNet-Lite0 features (``--encoder``), its deepest
    stage kept at stride 16 so the activation map is 1/16 of the input (16 x 16 at 256 px), not 1/32.
    ``ch`` is unused: the encoder fixes the width (320 channels)."""

    def __init__(self, pretrained=True):
        nn.Module.__init__(self)
        self.encoder = PretrainedEncoder(pretrained=pretrained, last_stride=1)
        self.fc = nn.Linear(self.encoder.channels[-1], 1)

    def forward(self, images):
        features = self.encoder(images)[-1]
        return self.fc(features.mean((2, 3)))[:, 0], features


def classifier_network(opt):
    """The classifier ``opt.encoder`` names (ImageNet weights loaded only to train: a served file holds all)."""
    if getattr(opt, 'encoder', 'scratch') == 'scratch':
        return CAMClassifier(img_ch=opt.img_ch, ch=opt.ch)
    return PretrainedCAMClassifier(pretrained=opt.is_train)


def class_activation_map(classifier, features, size):
    """ReLU of the CAM, upsampled (bilinear) to ``size`` (H, W) and divided by its per-image maximum:
    B x H x W in [0, 1] (all zero where no position speaks for a lesion)."""
    cam = F.relu(classifier.activation_map(features))[:, None]
    cam = F.interpolate(cam, size=tuple(size), mode='bilinear', align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1)[0].clamp_min(1e-12)
    return (cam / peak[:, None, None]).clamp(0, 1)


class CAMModel(BaseModel):
    """The CAM classifier baseline (``--model cam``), trained and served like CLTNet."""

    model_names = ['classifier']
    loss_names = ['cls']
    loss_groups = {'classification BCE': ['cls']}
    visual_names = ['real_A', 'cam_A', 'real_B', 'cam_B']
    map_modes = ('cam',)
    # No residual generator or discriminators: only these shape the classifier.
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch')
    optional_architecture = {'encoder': 'scratch'}

    def __init__(self, opt):
        super().__init__(opt)
        self.classifier = self.place(classifier_network(opt))
        if opt.is_train:
            self.single_adam('cls', self.classifier)

    def optimize_parameters(self):
        """One Adam step of the BCE between the lesion logits and the weak labels (A = 1, B = 0)."""
        images = torch.cat([self.real_A, self.real_B], 0)
        labels = torch.cat([torch.ones(len(self.real_A)), torch.zeros(len(self.real_B))]).to(self.device)
        with self.autocast():
            logits, features = self.classifier(images)
        self.loss_cls = F.binary_cross_entropy_with_logits(logits.float(), labels)
        self.step_optimizer(self.loss_cls, 'cls')
        with torch.no_grad():
            cam = class_activation_map(_unwrap(self.classifier), features.detach(), images.shape[-2:])
        # Visuals are shown in [-1, 1] like the images.
        self.cam_A, self.cam_B = (cam[:, None] * 2 - 1).split([len(self.real_A), len(self.real_B)])

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'cam': B x H x W in [0, 1]}, 'score': the
        lesion probability (B,), 'heatmap': the same CAM B x H x W}. There is no translated image."""
        images = self.to_device(images)
        classifier = _unwrap(self.classifier)
        with self.autocast():
            logits, features = classifier(images)
        cam = class_activation_map(classifier, features, images.shape[-2:])
        return {'maps': {'cam': cam}, 'score': torch.sigmoid(logits.float()), 'heatmap': cam}

