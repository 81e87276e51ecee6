"""Stage 2 (``--model seg``): a U-Net trained on stage-1 pseudo-masks, optionally with a few labelled images.

Weakly supervised pipelines (PSA, IRN, SEAM) end with a segmentation network trained on their refined
localisation maps: it sees every training image with a mask, so the per-image noise of the pseudo-masks
averages out. Pixels whose pseudo-label is uncertain carry weight 0 (see data/pseudo_dataset.py);
normal (B) images teach it to predict nothing.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import PretrainedEncoder
from .base_model import BaseModel


def _norm(channels):
    # GroupNorm: a step holds a handful of images, too few for BatchNorm statistics.
    return nn.GroupNorm(min(8, channels), channels)


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU (the U-Net block)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), _norm(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), _norm(out_ch), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.body(x)


class UNet(nn.Module):
    """Images B x img_ch x H x W -> lesion logits B x 1 x H x W.

    ``depth`` max-pool levels with widths ch, 2ch, 4ch, 8ch, 8ch...; the decoder upsamples to each skip
    connection's exact size, so any input size works.
    """

    def __init__(self, img_ch=3, ch=16, depth=4):
        super().__init__()
        widths = [ch * 2 ** min(level, 3) for level in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(img_ch, widths[0])] +
                                  [DoubleConv(widths[i - 1], widths[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([DoubleConv(widths[i] + widths[i - 1], widths[i - 1])
                                 for i in range(depth, 0, -1)])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x):
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


class PretrainedUNet(nn.Module):
    """Images B x img_ch x H x W -> lesion logits B x 1 x H x W, on an ImageNet-pretrained encoder.

    The U-Net decoder climbs the encoder's strides 32 -> 16 -> 8 -> 4 -> 2 (widths 8ch ... ch, each a
    DoubleConv on the upsampled features and the encoder's skip), then to full resolution with the image
    itself as the last skip, so outlines can follow its edges rather than the stride-2 grid.
    """

    def __init__(self, img_ch=3, ch=16, pretrained=True):
        super().__init__()
        self.encoder = PretrainedEncoder(pretrained=pretrained)
        skips = self.encoder.channels[:-1][::-1] + (img_ch,)
        widths = (8 * ch, 4 * ch, 2 * ch, ch, ch)
        below = self.encoder.channels[-1]
        blocks = []
        for skip, width in zip(skips, widths):
            blocks.append(DoubleConv(below + skip, width))
            below = width
        self.up = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[-1], 1, 1)

    def forward(self, images):
        features = self.encoder(images)
        x = features[-1]
        for block, skip in zip(self.up, features[-2::-1] + [images]):
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = block(torch.cat([x, skip.to(x.dtype)], 1))
        return self.head(x)


def segmentation_network(opt):
    """The U-Net ``opt.encoder`` names: from scratch, or on the pretrained encoder (its ImageNet weights
    loaded only to train: a file being served holds every weight)."""
    encoder = getattr(opt, 'encoder', 'scratch')
    if encoder == 'scratch':
        return UNet(img_ch=opt.img_ch, ch=opt.ch)
    return PretrainedUNet(img_ch=opt.img_ch, ch=opt.ch, pretrained=opt.is_train)


def weighted_losses(logits, target, weight):
    """(BCE, soft Dice loss) of logits against target, each pixel counted with ``weight`` (0 = ignored).

    The Dice term pools the whole batch, so normal images (empty targets) still penalise every pixel
    predicted as lesion, and an image whose pseudo-mask was dropped adds nothing.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
    bce = (bce * weight).sum() / weight.sum().clamp_min(1.0)
    prob = torch.sigmoid(logits) * weight
    overlap = (prob * target).sum()
    dice = 1 - (2 * overlap + 1) / (prob.sum() + (target * weight).sum() + 1)
    return bce, dice


class SegModel(BaseModel):
    """The stage-2 segmentation network, trained by train.py --stage 2 and served by test.py / crf.py."""

    model_names = ['seg']
    loss_names = ['bce', 'dice']
    loss_groups = {'segmentation (pseudo-masks)': ['bce', 'dice']}
    visual_names = ['real_A', 'target_A', 'pred_A', 'real_B', 'pred_B']
    # 'seg-flips': the U-Net's probability averaged over the image and its three flips (the flips
    # training augments with), each flipped back; val chooses between it and the plain map.
    map_modes = ('seg', 'seg-flips')
    map_modes_help = "seg, seg-flips (the U-Net averaged over the image's four flips)"
    # Stage 2 trains this small U-Net with a plain segmentation loss: a larger learning rate and batch than the GAN.
    train_defaults = dict(name='stage2', lr=1e-3, iteration=2000, batch_size=4)
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch')
    optional_architecture = {'encoder': 'scratch'}

    def __init__(self, opt):
        super().__init__(opt)
        self.seg = self.place(segmentation_network(opt))
        if opt.is_train:
            self.single_adam('seg', self.seg)

    def set_input(self, batch):
        """batch: 'A' / 'B' images in [-1, 1] and 'A_target', 'A_weight', 'B_target', 'B_weight'
        (B x 1 x H x W: the pseudo-mask and each pixel's loss weight)."""
        super().set_input(batch)
        for name in ('A_target', 'A_weight', 'B_target', 'B_weight'):
            setattr(self, name, batch[name].to(self.device, non_blocking=True))

    def optimize_parameters(self):
        """One Adam step of weighted BCE + soft Dice on the lesion and the normal images together."""
        images = torch.cat([self.real_A, self.real_B], 0)
        target = torch.cat([self.A_target, self.B_target], 0)
        weight = torch.cat([self.A_weight, self.B_weight], 0)
        with self.autocast():
            logits = self.seg(images)
        self.loss_bce, self.loss_dice = weighted_losses(logits, target, weight)
        self.step_optimizer(self.loss_bce + self.loss_dice, 'seg')
        # Visuals are shown in [-1, 1] like the images.
        pred = torch.sigmoid(logits.detach().float()) * 2 - 1
        self.pred_A, self.pred_B = pred.split([len(self.real_A), len(self.real_B)])
        self.target_A = self.A_target * 2 - 1

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'seg': lesion probability B x H x W, 'seg-flips':
        its mean over the four flips}, 'score': the plain map's maximum per image (B,), the image-level
        lesion score}."""
        images = self.to_device(images)
        flips = [(), (-1,), (-2,), (-2, -1)]
        with self.autocast():
            logits = self.seg(torch.cat([images.flip(dims) if dims else images for dims in flips]))
        probs = torch.sigmoid(logits.float())[:, 0].chunk(len(flips))
        prob = probs[0]
        # Each flipped image's map flipped back (image dims -1, -2 are the map's too).
        averaged = sum(p.flip(dims) if dims else p for p, dims in zip(probs, flips)) / len(flips)
        return {'maps': {'seg': prob, 'seg-flips': averaged}, 'score': prob.flatten(1).max(1)[0]}
