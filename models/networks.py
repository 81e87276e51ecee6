"""Building blocks of CLTNet: the U-GAT-IT-style generator with a CAM head and an
attention-mask branch, and the spectral-norm PatchGAN discriminators with their own CAM logits.

Every shape comes from the input; the only size fixed at construction is the flattened
feature size of the non-light gamma/beta MLP (as in U-GAT-IT), which needs ``img_size``.
"""
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm
from torch.utils.checkpoint import checkpoint

from .backbone import PretrainedEncoder


class InstanceNorm(nn.Module):
    """Instance normalisation without affine parameters (what nn.InstanceNorm2d computes), as a
    group norm with one channel per group.

    Not nn.InstanceNorm2d: torch 2.14's CPU instance_norm returns wrong input gradients for a batch
    of one channels-last sample with a channels-last incoming gradient, exactly our batch-1
    training; group_norm is correct there and as fast.
    """

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        if x.device.type == 'cpu' and x.dtype != torch.float32 and not x.is_contiguous() \
                and x.is_contiguous(memory_format=torch.channels_last):
            # torch 2.14's CPU group_norm is 4-7x slower (forward + backward) on bf16 channels-last maps
            # than on the same map laid out contiguously, conversions both ways included (measured
            # here on 1-2 x 32-128 x 32-128 x 32-128 maps).
            out = F.group_norm(x.contiguous(), x.shape[1], eps=self.eps)
            return out.contiguous(memory_format=torch.channels_last)
        return F.group_norm(x, x.shape[1], eps=self.eps)


class ReflectionPad(nn.ReflectionPad2d):
    """nn.ReflectionPad2d that keeps its input's dtype under autocast.

    CPU autocast runs reflection_pad2d in fp32, so every pad of a bf16 map cost a cast up and the
    convolution after it a cast back down: two full-size copies per convolution, about a third of
    the paper setting's inference time. The forward pass is unchanged (padding is exact in any
    dtype); the backward pass sums the gradients of reflected border pixels in the map's dtype.
    """

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x)


class _InstanceStats(torch.autograd.Function):
    """(unbiased variance, mean) over H and W of an fp32 map, keepdim: what ``torch.var_mean(x, (2, 3))``
    returns, by two passes (the mean, then the squared deviations) instead of its Welford loop.

    Why: torch's CPU var_mean took 20 ms per 8 x 216 x 64 x 64 map here, a third of the paper
    setting's inference; two passes take 3 ms, within 3e-7 of float64 (Welford: 6e-8). The backward
    recomputes the deviations instead of storing them, so it keeps only ``x``, which the norm's affine
    map keeps anyway, and the mean.
    """

    @staticmethod
    def forward(ctx, x):
        mean = x.mean((2, 3), keepdim=True)
        var = (x - mean).square_().sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3] - 1)
        ctx.save_for_backward(x, mean)
        return var, mean

    @staticmethod
    def backward(ctx, grad_var, grad_mean):
        x, mean = ctx.saved_tensors
        pixels = x.shape[2] * x.shape[3]
        return torch.addcmul(grad_mean / pixels, x - mean, grad_var * (2 / (pixels - 1)))


def _mix_instance_layer(x, rho, eps):
    """(xf, scale, shift) with rho * InstanceNorm(x) + (1 - rho) * LayerNorm(x) == xf * scale + shift:
    x in fp32 and a B x C x 1 x 1 scale and shift.

    One affine map instead of two normalised maps mixed: autograd then keeps one full-size fp32
    tensor per norm layer for the backward pass instead of about eight, which were ~40 % of the
    paper setting's training memory. Statistics in fp32 even under autocast: bf16 variances of
    near-constant maps are unstable. The layer statistics are pooled from the instance ones (one pass
    over the map instead of two; the same unbiased variances).
    """
    xf = x.float()
    var_in, mean_in = _InstanceStats.apply(xf)
    pixels, channels = x.shape[2] * x.shape[3], x.shape[1]
    mean_ln = mean_in.mean(1, keepdim=True)
    squares = (var_in.sum(1, keepdim=True) * (pixels - 1) +
               (mean_in - mean_ln).square().sum(1, keepdim=True) * pixels)
    var_ln = squares / (channels * pixels - 1)
    rho = rho.float()
    scale_in, scale_ln = rho * torch.rsqrt(var_in + eps), (1 - rho) * torch.rsqrt(var_ln + eps)
    return xf, scale_in + scale_ln, -(mean_in * scale_in + mean_ln * scale_ln)


def _affine(xf, scale, shift, gamma, beta, dtype):
    """(xf * scale + shift) * gamma + beta as one multiply-add over the full-size map, cast to ``dtype``."""
    return torch.addcmul(shift * gamma + beta, xf, scale * gamma).to(dtype)


class AdaILN(nn.Module):
    """Adaptive instance-layer norm: gamma/beta come from the CAM features (translation branch)."""

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), 0.9))

    def forward(self, x, gamma, beta):
        return _affine(*_mix_instance_layer(x, self.rho, self.eps), gamma.float()[:, :, None, None],
                       beta.float()[:, :, None, None], x.dtype)


class ILN(nn.Module):
    """Instance-layer norm with learned gamma/beta (reconstruction branch and upsampling)."""

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return _affine(*_mix_instance_layer(x, self.rho, self.eps), self.gamma.float(), self.beta.float(), x.dtype)


# Output positions (per image) up to which SpectralConv2d computes its convolution as a matrix product.
SMALL_OUTPUT_POSITIONS = 16


class SpectralConv2d(nn.Conv2d):
    """Conv2d with spectral normalisation (what ``spectral_norm(nn.Conv2d(...))`` computes, with the
    same parameters, buffers, state-dict keys and initialisation), applied to the output:
    conv(x, W / sigma) + b == (conv(x, W) + sigma * b) / sigma.

    Why: the global discriminator's last weight is 8-23 M values; dividing it by sigma at every
    forward (and casting the quotient, a new tensor each time, to bf16) took ~15 % of a training
    step, while the output it scales is a few thousand values.
    """

    def __init__(self, *args, eps=1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        weight = self.weight
        del self.weight
        self.weight_orig = nn.Parameter(weight.detach())
        self.eps = eps
        rows, cols = weight.shape[0], weight[0].numel()
        self.register_buffer('weight_u', F.normalize(weight.new_empty(rows).normal_(0, 1), dim=0, eps=eps))
        self.register_buffer('weight_v', F.normalize(weight.new_empty(cols).normal_(0, 1), dim=0, eps=eps))

    def _channels_last(self):
        """Whether the weight is stored channels-last (and is not also plain contiguous, as 1x1 ones are)."""
        weight = self.weight_orig
        return not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)

    def _matrix(self):
        """(weight as an out x (in * kh * kw) matrix, without a copy for either memory format,
        v -> v in that matrix's column order, v in that order -> v)."""
        weight = self.weight_orig
        if not self._channels_last():
            return weight.flatten(1), (lambda v: v), (lambda v: v)
        # channels-last: columns in (kh, kw, in) order; u/v keep the canonical (in, kh, kw) order.
        c, kh, kw = weight.shape[1:]
        return (weight.permute(0, 2, 3, 1).flatten(1), lambda v: v.view(c, kh, kw).permute(1, 2, 0).flatten(),
                lambda v: v.view(kh, kw, c).permute(2, 0, 1).flatten())

    def sigma(self):
        """The largest singular value estimate; in training one power-iteration step first (as torch)."""
        matrix, to_columns, from_columns = self._matrix()
        u, v = self.weight_u, self.weight_v
        with torch.autocast(matrix.device.type, enabled=False):
            if self.training:
                with torch.no_grad():
                    v = F.normalize(from_columns(torch.mv(matrix.t(), u)), dim=0, eps=self.eps)
                    u = F.normalize(torch.mv(matrix, to_columns(v)), dim=0, eps=self.eps)
                    self.weight_u.copy_(u)
                    self.weight_v.copy_(v)
            return torch.dot(u, torch.mv(matrix, to_columns(v)))

    def forward(self, x):
        sigma = self.sigma()
        bias = None if self.bias is None else self.bias * sigma
        oh, ow = self._output_size(x)
        plain = self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
        if plain and oh * ow <= SMALL_OUTPUT_POSITIONS:
            return self._matmul_forward(x, bias, oh, ow) / sigma
        return self._conv_forward(x, self.weight_orig, bias) / sigma

    def _output_size(self, x):
        """(height, width) of the output for input ``x`` (no padding or dilation: the pads are layers)."""
        return tuple((x.shape[i + 2] - self.kernel_size[i]) // self.stride[i] + 1 for i in range(2))

    def _matmul_forward(self, x, bias, oh, ow):
        """The convolution as one matrix product of the weight with the unfolded input patches (im2col).

        Why: the discriminators' last layers have weights of millions of values but outputs of a few
        positions, where oneDNN's convolution spends its time re-laying out the weight (cpu preset: the
        global discriminator's 1024 x 512 x 4 x 4 layer took ~50 ms per step forward and backward, 24 ms
        as a matrix product); a GEMM reads the weight in place.
        The columns follow the weight's memory order, so a channels-last weight is not copied either.
        """
        matrix = self._matrix()[0]
        out_ch, in_ch, kh, kw = self.weight_orig.shape
        batch = x.shape[0]
        cols = F.unfold(x, (kh, kw), stride=self.stride).view(batch, in_ch, kh * kw, oh * ow)
        channels_last = self._channels_last()
        cols = cols.permute(0, 3, 2, 1) if channels_last else cols.permute(0, 3, 1, 2)
        out = F.linear(cols.reshape(batch * oh * ow, -1), matrix, bias).view(batch, oh, ow, out_ch)
        out = out.permute(0, 3, 1, 2)
        return out if channels_last else out.contiguous()


def _conv3(channels_in, channels_out, stride=1, bias=False):
    return [ReflectionPad(1), nn.Conv2d(channels_in, channels_out, 3, stride, bias=bias)]


class ResnetBlock(nn.Module):
    """Encoder residual block (instance norm)."""

    def __init__(self, dim):
        super().__init__()
        self.body = nn.Sequential(*_conv3(dim, dim), InstanceNorm(), nn.ReLU(True),
                                  *_conv3(dim, dim), InstanceNorm())

    def forward(self, x):
        return x + self.body(x)


class ResnetAdaILNBlock(nn.Module):
    """Decoder translation block: residual convs normalised by AdaILN."""

    def __init__(self, dim):
        super().__init__()
        self.conv1 = nn.Sequential(*_conv3(dim, dim))
        self.norm1 = AdaILN(dim)
        self.conv2 = nn.Sequential(*_conv3(dim, dim))
        self.norm2 = AdaILN(dim)

    def forward(self, x, gamma, beta):
        out = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(out), gamma, beta)


class ResnetILNBlock(nn.Module):
    """Decoder reconstruction block: residual convs normalised by ILN."""

    def __init__(self, dim):
        super().__init__()
        self.body = nn.Sequential(*_conv3(dim, dim), ILN(dim), nn.ReLU(True),
                                  *_conv3(dim, dim), ILN(dim))

    def forward(self, x):
        return x + self.body(x)


class CAMHead(nn.Module):
    """Class-activation head: avg- and max-pooled logits whose weights re-weight the features.

    Returns (re-weighted features fused by a 1x1 conv, logits B x 2, heatmap B x 1 x h x w).
    """

    def __init__(self, dim, spectral=False, activation=None):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        self.gap_fc = wrap(nn.Linear(dim, 1, bias=False))
        self.gmp_fc = wrap(nn.Linear(dim, 1, bias=False))
        self.fuse = nn.Sequential(nn.Conv2d(dim * 2, dim, 1), activation or nn.ReLU(True))

    def forward(self, feats):
        gap_logit = self.gap_fc(feats.mean((2, 3)))
        gmp_logit = self.gmp_fc(feats.amax((2, 3)))
        gap = feats * self.gap_fc.weight[:, :, None, None]
        gmp = feats * self.gmp_fc.weight[:, :, None, None]
        fused = self.fuse(torch.cat([gap, gmp], 1))
        return fused, torch.cat([gap_logit, gmp_logit], 1), fused.sum(1, keepdim=True)


class GeneratorOutput(NamedTuple):
    """What one generator pass returns (all at input resolution except ``cam_logit``)."""
    translated: torch.Tensor      # B x C x H x W, the image in the other domain, in [-1, 1]
    cam_logit: torch.Tensor       # B x 2, [avg-pool, max-pool] source-domain logits
    heatmap: torch.Tensor         # B x 1 x H x W, CAM heatmap (un-normalised, >= 0)
    mask: torch.Tensor            # B x 1 x H x W, attention mask in [0, 1]
    reconstruction: torch.Tensor  # B x C x H x W or None, input decoded by the reconstruction branch
    composite: torch.Tensor       # B x C x H x W, translated inside the mask, input outside

    def split(self, sizes):
        """One GeneratorOutput per batch slice of ``sizes`` (the passes that were batched together)."""
        parts = [field.split(sizes) if field is not None else [None] * len(sizes) for field in self]
        return [GeneratorOutput(*fields) for fields in zip(*parts)]


class CLTGenerator(nn.Module):
    """ResNet generator with a CAM head, an attention mask and two fused decoder branches.

    Decoder block k computes ``x = translate_k(x) * mask + x_r * (1 - mask)`` with
    ``x_r = reconstruct_k(x_r)``; both streams share the upsampling head, so the reconstruction
    of the input and the translation are decoded by the same layers.

    ``encoder='efficientnet-lite0'`` adds frozen ImageNet features (strides 4, 8 and 16, brought to the
    encoder's 1/4 grid) to the encoder's output through a 1x1 convolution that starts at zero: training
    starts from the scratch generator, and the CAM head, mask and decoder learn how much of them to use.
    Frozen because a GAN's generator gradients on 500 + 500 images would wear the features away; the
    gradient still flows through them to the input (the cycle passes judge translated images).
    """

    def __init__(self, img_ch=3, ch=64, n_res=4, img_size=256, light=True, encoder='scratch', pretrained=True):
        super().__init__()
        if img_size % 4:
            raise ValueError(f"img_size must be divisible by 4, got {img_size}")
        self.light = light
        # True: keep only the encoder's, each decoder block's and the upsampling head's inputs for the
        # backward pass and run those parts again there (train.py --recompute): the same gradients;
        # at the paper setting a 3.7 instead of 6.3 GB peak for a ~20 % slower step on a 2-core CPU.
        self.recompute = False
        dim = ch * 4
        self.encoder = nn.Sequential(
            ReflectionPad(3), nn.Conv2d(img_ch, ch, 7, bias=False), InstanceNorm(), nn.ReLU(True),
            *_conv3(ch, ch * 2, stride=2), InstanceNorm(), nn.ReLU(True),
            *_conv3(ch * 2, dim, stride=2), InstanceNorm(), nn.ReLU(True),
            *[ResnetBlock(dim) for _ in range(n_res)])
        self.imagenet = None
        if encoder != 'scratch':
            self.imagenet = PretrainedEncoder(pretrained=pretrained).requires_grad_(False)
            self.imagenet_projection = nn.Conv2d(sum(self.imagenet.channels[1:4]), dim, 1)
            nn.init.zeros_(self.imagenet_projection.weight)
            nn.init.zeros_(self.imagenet_projection.bias)
        self.cam = CAMHead(dim)
        self.mask_head = nn.Sequential(*_conv3(dim, 1, bias=True), nn.Sigmoid())
        mlp_in = dim if light else dim * (img_size // 4) ** 2
        self.mlp = nn.Sequential(nn.Linear(mlp_in, dim, bias=False), nn.ReLU(True),
                                 nn.Linear(dim, dim, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(dim, dim, bias=False)
        self.beta = nn.Linear(dim, dim, bias=False)
        self.translate = nn.ModuleList([ResnetAdaILNBlock(dim) for _ in range(n_res)])
        self.reconstruct = nn.ModuleList([ResnetILNBlock(dim) for _ in range(n_res)])
        up = []
        for i in range(2):
            c = dim // 2 ** i
            up += [nn.Upsample(scale_factor=2, mode='nearest'), *_conv3(c, c // 2), ILN(c // 2), nn.ReLU(True)]
        self.upsample = nn.Sequential(*up, ReflectionPad(3), nn.Conv2d(ch, img_ch, 7, bias=False), nn.Tanh())

    def _run(self, module, *inputs):
        """module(*inputs), recomputed in the backward pass instead of stored when ``recompute`` is on."""
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(module, *inputs, use_reentrant=False)
        return module(*inputs)

    def encode(self, x):
        """Encoder + CAM head: returns (features, cam_logit, heatmap at 1/4 resolution)."""
        feats = self._run(self.encoder, x)
        if self.imagenet is not None:
            grid = feats.shape[-2:]
            pretrained = [F.interpolate(f, size=grid, mode='bilinear', align_corners=False)
                          for f in self.imagenet(x)[1:4]]
            feats = feats + self.imagenet_projection(torch.cat(pretrained, 1))
        # The CAM weights re-weight the feature maps so the decoder sees where the classifier looks.
        return self.cam(feats)

    def forward(self, x, with_reconstruction=True):
        """x: B x img_ch x H x W in [-1, 1] -> GeneratorOutput.

        ``with_reconstruction=False`` skips decoding the reconstruction stream (cycle/identity passes).
        """
        size = x.shape[-2:]
        feats, cam_logit, heatmap = self.encode(x)
        mask_small = self.mask_head(feats)
        pooled = feats.mean((2, 3)) if self.light else feats.flatten(1)
        hidden = self.mlp(pooled)
        gamma, beta = self.gamma(hidden), self.beta(hidden)
        h, h_r = feats, feats
        for translate, reconstruct in zip(self.translate, self.reconstruct):
            h_r = self._run(reconstruct, h_r)
            h = self._run(translate, h, gamma, beta) * mask_small + h_r * (1 - mask_small)
        if with_reconstruction:
            decoded = self._run(self.upsample, torch.cat([h, h_r], 0))
            translated, reconstruction = decoded.chunk(2, 0)
        else:
            translated, reconstruction = self._run(self.upsample, h), None
        mask = F.interpolate(mask_small, size=size, mode='bilinear', align_corners=False)
        composite = translated * mask + x * (1 - mask)
        heatmap = F.interpolate(heatmap, size=size, mode='bilinear', align_corners=False)
        return GeneratorOutput(translated, cam_logit, heatmap, mask, reconstruction, composite)

    def clip_rho(self):
        """Keep every AdaILN/ILN mixing weight in [0, 1] (called after each generator step)."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (AdaILN, ILN)):
                    module.rho.clamp_(0, 1)


class Discriminator(nn.Module):
    """Spectral-norm PatchGAN with a CAM head; returns (patch logits, cam_logit B x 2, heatmap).

    ``n_layers`` 7 is the global and 5 the local discriminator of U-GAT-IT. Downsamplings are
    capped so the last feature map stays at least 4 x 4 for small ``img_size``.
    """

    def __init__(self, img_ch=3, ch=64, n_layers=7, img_size=256):
        super().__init__()
        n_down = max(1, min(n_layers - 2, int(math.log2(img_size)) - 2))
        layers = [ReflectionPad(1), SpectralConv2d(img_ch, ch, 4, 2), nn.LeakyReLU(0.2, True)]
        c = ch
        for _ in range(n_down - 1):
            layers += [ReflectionPad(1), SpectralConv2d(c, c * 2, 4, 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [ReflectionPad(1), SpectralConv2d(c, c * 2, 4, 1), nn.LeakyReLU(0.2, True)]
        c *= 2
        self.body = nn.Sequential(*layers)
        self.cam = CAMHead(c, spectral=True, activation=nn.LeakyReLU(0.2, True))
        self.head = nn.Sequential(ReflectionPad(1), SpectralConv2d(c, 1, 4, 1, bias=False))

    def forward(self, x):
        feats, cam_logit, heatmap = self.cam(self.body(x))
        return self.head(feats), cam_logit, heatmap
