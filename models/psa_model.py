"""PSA / AffinityNet (Ahn and Kwak 2018, "Learning Pixel-level Semantic Affinity with Image-level Supervision"),
for the two classes lesion and background.

A trained CAM (``--psa_cam_weights``: a checkpoint of a ``--model cam`` run or an exported cam file) is
frozen and only teaches: its map marks confident lesion and confident background positions, and every
pair of positions within ``--psa_radius`` of each other (at the affinity network's resolution, 1/8 of
the image) gets the label 1 when both are confident and of one class, 0 when both are confident and of
different classes, none when either is uncertain. The affinity network (the pretrained backbone, its
features at three depths reduced by 1x1 convolutions to 64, 128 and 256 channels, concatenated and mixed
by a 1x1 convolution, as PSA's) predicts a_ij = exp(-mean_c |f_i - f_j|), trained with PSA's balanced
loss: the mean cross-entropy of the lesion-lesion pairs, of the background-background pairs and of the
lesion-background pairs, weighted 1/4, 1/4 and 1/2 (positives and negatives weigh alike). At inference
the CAM is propagated by the random walk on the predicted affinities (models/random_walk.py: power
``--psa_beta``, ``--psa_steps`` steps: the 'psa' map; 4, 16 and 64 steps: 'psa-t4', 'psa-t16', 'psa-t64'),
scaled to its maximum; test.py chooses the map and its threshold on val.

Kept: the confident regions from PSA's background score at two powers (lesion where the CAM beats
(1 - CAM)^alpha_low, background where (1 - CAM)^alpha_high beats it, PSA's 4 and 24), the pairs within
the radius, the affinity definition, head and loss, the walk with beta 8 and t = 2^8 steps. Changed: PSA
walks a background score (1 - CAM)^16 beside the CAM and takes the larger; on our CAMs (scaled to a peak of 1
per image) that background falls below the CAM wherever the CAM passes about 0.15, so nearly the whole image
became lesion (val DI 0.42 on ISIC before any walking); the walked CAM against a threshold chosen on val
decides instead, as IRN's constant background does in models/irn_model.py. Shorter walks are offered to val
because the papers' 256 steps were set on larger maps. Simplified: PSA refines both confident regions with a dense CRF;
a model may not import the CRF (refinement/ sits above models/), so the regions come from the CAM
thresholds alone. Normal (B) images are background throughout (their weak label says so), which PSA,
having no images without objects, did not need. One learning rate for all of the affinity network (PSA
gave its new layers 10x), Adam instead of SGD, as every model here. The random walk's settings and the
radius are stored in the architecture, so test.py serves a run with the values it trained with.
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import PretrainedEncoder
from .base_model import BaseModel, _unwrap, add_flag_table, set_requires_grad
from .cam_model import ScratchTaps, class_activation_map, classifier_network
from .random_walk import scaled_to_peak, walk_modes, walks, within_radius
from .trained_cam import frozen_classifier, trained_cam_state

# A position of the uncertain band (neither confident lesion nor confident background).
UNCERTAIN = -1
# The head's widths per depth (PSA: 64, 128, 256 from ResNet-38's conv4, conv5, conv6).
HEAD_WIDTHS = (64, 128, 256)
# --encoder scratch: the CAM classifier's last three blocks, all at stride 8 (widths 4ch, 8ch, 8ch), as PSA taps
# three stride-8 stages of its dilated ResNet-38.
SCRATCH_TAPS = (5, 6, 7)


class PretrainedTrunk(nn.Module):
    """EfficientNet-Lite0's features at strides 8, 16 and 16 (the deepest stage kept at stride 16, as the
    pretrained CAM's)."""

    def __init__(self, pretrained=True):
        super().__init__()
        self.encoder = PretrainedEncoder(pretrained=pretrained, last_stride=1)
        self.channels = self.encoder.channels[2:]

    def forward(self, images):
        return self.encoder(images)[2:]


class AffinityNet(nn.Module):
    """Images -> affinity features B x 448 x h x w at the first tap's resolution (1/8 of the image)."""

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk
        self.reduce = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(trunk.channels, HEAD_WIDTHS))
        self.mix = nn.Conv2d(sum(HEAD_WIDTHS), sum(HEAD_WIDTHS), 1, bias=False)
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight)
        # PSA's gain: the initial feature distances then span affinities from near 0 to 1.
        nn.init.xavier_uniform_(self.mix.weight, gain=4)

    def forward(self, images):
        taps = self.trunk(images)
        size = taps[0].shape[-2:]
        parts = [F.elu(conv(tap)) for conv, tap in zip(self.reduce, taps)]
        parts = [p if p.shape[-2:] == size else F.interpolate(p, size=size, mode='bilinear', align_corners=False)
                 for p in parts]
        return F.elu(self.mix(torch.cat(parts, 1)))


def affinity_network(opt):
    """The affinity network on ``opt.encoder``'s trunk (ImageNet weights loaded only to train)."""
    if getattr(opt, 'encoder', 'scratch') == 'scratch':
        return AffinityNet(ScratchTaps(opt.img_ch, opt.ch, SCRATCH_TAPS))
    return AffinityNet(PretrainedTrunk(pretrained=opt.is_train))


def radius_pairs(height, width, radius, device=None):
    """(from, to): the flat indices of every pair of distinct positions within ``radius``, each pair once."""
    return torch.triu(within_radius(height, width, radius, device), diagonal=1).nonzero().unbind(1)


def pair_affinities(features, pairs):
    """B x C x h x w features -> B x P affinities exp(-mean_c |f_i - f_j|) of the ``pairs``."""
    flat = features.float().flatten(2)
    return torch.exp(-(flat[:, :, pairs[0]] - flat[:, :, pairs[1]]).abs().mean(1))


def dense_affinity(features, radius):
    """B x N x N affinities (N = h * w): symmetric, 1 on the diagonal, 0 beyond ``radius`` (the walk's input)."""
    batch, _, height, width = features.shape
    pairs = radius_pairs(height, width, radius, features.device)
    values = pair_affinities(features, pairs)
    dense = torch.zeros(batch, height * width, height * width, device=features.device)
    dense[:, pairs[0], pairs[1]] = values
    dense[:, pairs[1], pairs[0]] = values
    dense.diagonal(dim1=1, dim2=2).fill_(1.0)
    return dense


def confident_regions(cam, lesion, alpha_low=4.0, alpha_high=24.0):
    """B x h x w CAMs in [0, 1] and the weak labels ``lesion`` (bool B) -> long B x h x w: 1 confident
    lesion, 0 confident background, UNCERTAIN between. PSA's background score (1 - CAM)^alpha is strong at
    ``alpha_low``, so only a CAM that beats it there is surely lesion, and weak at ``alpha_high``, so where
    it still wins is surely background. A normal image is background everywhere."""
    regions = torch.full(cam.shape, UNCERTAIN, dtype=torch.long, device=cam.device)
    regions[(1 - cam) ** alpha_high >= cam] = 0
    regions[cam > (1 - cam) ** alpha_low] = 1
    regions[~lesion] = 0
    return regions


def pair_labels(regions, pairs):
    """Bool B x P masks of the ``pairs`` that are lesion-lesion ('fg'), background-background ('bg') and
    lesion-background ('neg'); a pair with a position in the uncertain band is in none of them."""
    flat = regions.flatten(1)
    first, second = flat[:, pairs[0]], flat[:, pairs[1]]
    confident = (first != UNCERTAIN) & (second != UNCERTAIN)
    return {'fg': confident & (first == 1) & (second == 1), 'bg': confident & (first == 0) & (second == 0),
            'neg': confident & (first != second)}


def balanced_affinity_loss(affinity, labels, eps=1e-5):
    """PSA's loss: the mean -log a of the lesion pairs and of the background pairs, the mean -log(1 - a) of
    the lesion-background pairs, weighted 1/4, 1/4, 1/2 -> (total, {'fg', 'bg', 'neg'}); an empty kind adds 0."""
    def mean_over(mask, losses):
        mask = mask.float()
        return (mask * losses).sum() / (mask.sum() + eps)
    parts = {'fg': mean_over(labels['fg'], -torch.log(affinity + eps)),
             'bg': mean_over(labels['bg'], -torch.log(affinity + eps)),
             'neg': mean_over(labels['neg'], -torch.log(1 + eps - affinity))}
    return parts['fg'] / 4 + parts['bg'] / 4 + parts['neg'] / 2, parts


PSA_FLAGS = (
    ('--psa_cam_weights', str, '', 'the trained CAM it learns affinities from and propagates: a checkpoint of a '
                                   '--model cam run or an exported cam weights file (recorded as given)'),
    ('--psa_radius', int, 5, 'pairs of positions within this distance at 1/8 of the image are labelled and walked '
                             'along (PSA: 5)'),
    ('--psa_alpha_low', float, 4.0, 'confident lesion where the CAM exceeds (1 - CAM)^this (PSA: 4)'),
    ('--psa_alpha_high', float, 24.0, 'confident background where (1 - CAM)^this exceeds the CAM (PSA: 24); '
                                      'between the two: uncertain, no pair labels'),
    ('--psa_beta', float, 8.0, 'affinities raised to this power before the walk (PSA: 8)'),
    ('--psa_steps', int, 256, "random-walk steps of the 'psa' map (PSA: 2^8, as logt 8 matrix squarings); "
                              "the 'psa-tT' maps walk T = 4, 16, 64 (at most this)"),
)


def load_cam_classifier(opt):
    """The classifier of ``opt.psa_cam_weights`` (a CAM checkpoint or weights file), checked against this run's
    shape flags; exit with one line naming the file and the fix for a missing or wrong file."""
    path = opt.psa_cam_weights
    state = trained_cam_state(path, '--psa_cam_weights', 'psa')
    theirs = state['architecture']
    shape = {'encoder': theirs.get('encoder', 'scratch'), 'img_ch': theirs.get('img_ch')}
    if shape['encoder'] == 'scratch':
        shape['ch'] = theirs.get('ch')  # the pretrained classifier's width is the encoder's
    differ = {key: value for key, value in shape.items() if getattr(opt, key) != value}
    if differ:
        flags = ' '.join(f'--{key} {value}' for key, value in differ.items())
        raise SystemExit(f'error: --psa_cam_weights {path} is a CAM of {flags}; pass {flags} to this run too '
                         f'(the stored classifier is rebuilt from its flags)')
    cam_opt = argparse.Namespace(**{**vars(opt), 'is_train': False, 'compile': False})
    return frozen_classifier(cam_opt, state, path)


class PSAModel(BaseModel):
    """AffinityNet on a frozen CAM classifier (``--model psa``); both networks are saved, so a run's
    checkpoints serve without the CAM file."""

    model_names = ['classifier', 'affinity']
    loss_names = ['fg', 'bg', 'neg', 'aff']
    loss_groups = {'affinity pairs': ['fg', 'bg', 'neg'], 'affinity total': ['aff']}
    visual_names = ['real_A', 'cam_A', 'regions_A', 'real_B']
    map_modes = ('cam', *walk_modes('psa', 1))
    map_modes_help = "cam, psa (the CAM walked --psa_steps on the learned affinities), psa-t4, psa-t16, psa-t64 " \
                     "(walked 4, 16, 64 steps)"
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch', 'psa_radius', 'psa_beta', 'psa_steps')
    optional_architecture = {'encoder': 'scratch'}
    flag_ranges = {'psa_radius': (1, None), 'psa_alpha_low': (0, None), 'psa_alpha_high': (0, None),
                   'psa_beta': (0, None), 'psa_steps': (1, None)}

    @staticmethod
    def modify_commandline_options(parser, groups):
        add_flag_table(parser.add_argument_group('--model psa (AffinityNet on a trained CAM)'), PSA_FLAGS,
                       '--model psa: ')

    def __init__(self, opt):
        super().__init__(opt)
        if opt.is_train and opt.psa_alpha_low >= opt.psa_alpha_high:
            raise SystemExit(f'error: --psa_alpha_low ({opt.psa_alpha_low:g}) must be below --psa_alpha_high '
                             f'({opt.psa_alpha_high:g}): the confident lesion and background regions would overlap')
        self.classifier = self.place(load_cam_classifier(opt) if opt.is_train else classifier_network(opt))
        set_requires_grad([self.classifier], False)
        self.affinity = self.place(affinity_network(opt))
        if opt.is_train:
            self.single_adam('aff', self.affinity)

    def train(self, mode=True):
        super().train(mode)
        self.classifier.train(False)  # frozen: it only labels

    def wrap_distributed(self, wrap):
        # The frozen classifier has nothing to synchronise (DDP refuses a module without trainable weights).
        self.affinity = wrap(self.affinity)

    def optimize_parameters(self):
        """One Adam step of the balanced loss on the pairs the frozen CAM labels (A: lesion images, B: normal)."""
        images = torch.cat([self.real_A, self.real_B], 0)
        lesion = torch.arange(len(images), device=self.device) < len(self.real_A)
        classifier = _unwrap(self.classifier)
        with torch.no_grad(), self.autocast():
            _, cam_features = classifier(images)
        with self.autocast():
            features = self.affinity(images)
        height, width = features.shape[-2:]
        cam = class_activation_map(classifier, cam_features, (height, width))
        regions = confident_regions(cam, lesion, self.opt.psa_alpha_low, self.opt.psa_alpha_high)
        pairs = radius_pairs(height, width, self.opt.psa_radius, self.device)
        self.loss_aff, parts = balanced_affinity_loss(pair_affinities(features, pairs), pair_labels(regions, pairs))
        self.loss_fg, self.loss_bg, self.loss_neg = parts['fg'], parts['bg'], parts['neg']
        self.step_optimizer(self.loss_aff, 'aff')
        self.set_visuals(cam, regions, images.shape[-2:])

    def set_visuals(self, cam, regions, size):
        """The lesion images' CAM and confident regions (lesion 1, uncertain 0, background -1) at image size."""
        count = len(self.real_A)
        shown = torch.where(regions == UNCERTAIN, 0, regions * 2 - 1)[:count, None].float()
        self.regions_A = F.interpolate(shown, size=tuple(size), mode='nearest')
        self.cam_A = F.interpolate(cam[:count, None], size=tuple(size), mode='bilinear', align_corners=False) * 2 - 1

    def propagate(self, cam, features):
        """B x h x w CAMs -> {map mode: the CAM walked on the predicted affinities as long as the mode says,
        scaled to its maximum, B x h x w in [0, 1]} (models/random_walk.walk_modes)."""
        lengths = walk_modes('psa', self.opt.psa_steps)
        walked = walks(cam[:, None], dense_affinity(features, self.opt.psa_radius), self.opt.psa_beta,
                       set(lengths.values()))
        return {mode: scaled_to_peak(walked[steps][:, 0]) for mode, steps in lengths.items()}

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'cam': the CAM (as --model cam's), 'psa', 'psa-tT': the
        walked CAMs}, each B x H x W in [0, 1], 'score': the classifier's lesion probability (B,), 'heatmap':
        the CAM}."""
        images = self.to_device(images)
        classifier = _unwrap(self.classifier)
        with self.autocast():
            logits, cam_features = classifier(images)
            features = _unwrap(self.affinity)(images)
        size = images.shape[-2:]
        cam = class_activation_map(classifier, cam_features, size)
        walked = self.propagate(class_activation_map(classifier, cam_features, features.shape[-2:]), features)
        maps = {mode: F.interpolate(values[:, None], size=size, mode='bilinear', align_corners=False)[:, 0].clamp(0, 1)
                for mode, values in walked.items()}
        return {'maps': {'cam': cam, **maps}, 'score': torch.sigmoid(logits.float()), 'heatmap': cam}
