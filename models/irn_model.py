"""IRN (``--model irn``): Ahn, Cho and Kwak 2019, "Weakly Supervised Learning of Instance Segmentation with
Inter-pixel Relations" (jiwoon-ahn/irn), its semantic part, on a trained and frozen CAM.

The mechanism, as IRN has it:
- Seeds: the CAM of a lesion image gives confident lesion (CAM >= ``--irn_fg_threshold``), confident
  background (CAM < ``--irn_bg_threshold``) and an uncertain band between, which is ignored.
- Inter-pixel relations: every two positions of the stride-4 map within ``--irn_radius`` of each other
  whose seeds are both confident are a pair: same class (positive) or not (negative).
- A class-boundary branch on the backbone's multi-level features (each projected to ``--ch`` channels,
  brought to stride 4 and joined by a 1x1 convolution) gives a boundary map B in [0, 1]; the affinity of
  two positions is 1 - the maximum of B along the line between them. IRN's loss: -log(affinity) on the
  positive pairs (background and lesion pairs averaged apart, then together) and -log(1 - affinity) on
  the negative ones, the two halves weighed equally, so a boundary must lie between classes and
  nowhere inside one.
- Inference: the CAM times (1 - B), walked along the affinities raised to ``--irn_beta`` for
  ``--irn_steps`` steps within half the training radius (IRN: 10 to train, 5 to walk), normalised by its
  maximum: the 'irn' map; 'irn-t4', 'irn-t16' and 'irn-t64' walk 4, 16 and 64 steps (IRN's 256 were set
  for 128 x 128 maps; ours are 64 x 64, where as many steps spread further), and val chooses among them.
  IRN then compares it with a constant background score (0.25); here that constant is the threshold
  test.py chooses on val like every model's. 'cam' is the frozen CAM itself.

What is simplified, and why:
- No displacement-field branch: it serves instance segmentation only; the semantic maps do not use it.
- Seeds without IRN's dense CRF: they are made at every step from the augmented image the boundary
  branch sees (a CRF per step costs more than the step), so the thresholds alone set the uncertain band.
- Normal (B) images give seeds too: all background (their weak label says no lesion), so the boundary
  branch also learns to draw no boundary on healthy tissue. IRN trains on images with objects only.
- IRN walks T^256 by squaring T eight times (8 N^3 products); walking the scores 256 times is the same
  T^256 applied to them at 256 N^2, cheaper for any map over 32 positions (``--irn_steps 256``).
- The backbone (``--encoder efficientnet-lite0``) is frozen at its ImageNet weights as IRN freezes its
  ResNet-50; ``--encoder scratch`` (tests, no pretrained weights) trains a small encoder of its own.
- ``--irn_radius 5``: IRN's 10 at stride 4 was for 512-px crops; 5 covers the same share of a 256-px image.
"""
import argparse
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import PretrainedEncoder
from .base_model import BaseModel, _unwrap, add_flag_table, set_requires_grad
from .cam_model import ScratchTaps, _norm, class_activation_map, classifier_network
from .random_walk import scaled_to_peak, walk_modes, walks
from .trained_cam import frozen_classifier, trained_cam_state

# The boundary map's stride (IRN's).
STRIDE = 4
# --encoder scratch: the CAM classifier's stage ends (strides 2, 4, 8, 8; widths ch, 2ch, 4ch, 8ch).
SCRATCH_TAPS = (1, 3, 5, 7)
IGNORE = -1  # the seed of an uncertain position


def load_frozen_cam(path, device):
    """The CAM classifier stored in ``path`` (a --model cam checkpoint or weights file) on ``device``, in
    eval mode with every weight frozen, and its architecture; exits with one line for a wrong file."""
    state = trained_cam_state(path, '--irn_cam_weights', 'irn')
    options = argparse.Namespace(device=str(device), amp='off', channels_last=False, compile=False, is_train=False)
    return frozen_classifier(options, state, path), state['architecture']


# ---- pairs within a radius and the path between them (IRN's PathIndex, for one map size) ----

def walk_directions(radius):
    """The offsets (dy, dx) to the positions within ``radius``, one of each +-pair (the pair (i, j) is
    the pair (j, i)): dy > 0, or dy == 0 and dx > 0."""
    reach = int(radius)
    return [(dy, dx) for dy in range(reach + 1) for dx in range(-reach, reach + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius]


def path_cells(dy, dx):
    """The cells of the line from (0, 0) to (dy, dx): those of its bounding box less than one cell from
    it (IRN's rule), so a diagonal line cannot slip between two boundary cells."""
    length_sq = dy * dy + dx * dx
    return [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 < length_sq]


@functools.lru_cache(maxsize=16)
def pair_index(height, width, radius, device='cpu'):
    """Index tensors of the pairs within ``radius`` on a height x width map, D directions, N = height * width:
    ``paths`` D x L x N, the cells of each source's line into the map padded by ``reach`` on every side
    (shorter lines repeat their first cell); ``dst`` D x N, each pair's other end; ``valid`` D x N, whether
    that end lies inside the map."""
    directions = walk_directions(radius)
    reach = max(max(abs(dy), abs(dx)) for dy, dx in directions)
    cells = [path_cells(dy, dx) for dy, dx in directions]
    longest = max(len(c) for c in cells)
    offsets = torch.tensor([c + c[:1] * (longest - len(c)) for c in cells])  # D x L x 2
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    paths = (ys + reach + offsets[..., :1]) * (width + 2 * reach) + xs + reach + offsets[..., 1:]
    step = torch.tensor(directions)[:, :, None]  # D x 2 x 1
    dst_y, dst_x = ys + step[:, 0], xs + step[:, 1]
    valid = (dst_y < height) & (dst_x >= 0) & (dst_x < width)
    dst = (dst_y * width + dst_x).where(valid, 0)
    return paths.to(device), dst.to(device), valid.to(device), reach


def path_max_affinity(boundary, radius):
    """B x H x W boundary map in [0, 1] -> B x D x N affinities of each position and the one ``walk_directions``
    d away: 1 - the maximum of the boundary along the line between them (beyond the map: a boundary)."""
    height, width = boundary.shape[-2:]
    paths, _, _, reach = pair_index(height, width, float(radius), str(boundary.device))
    padded = F.pad(boundary, (reach,) * 4, value=1.0).flatten(1)
    return 1 - padded[:, paths].amax(2)


def relation_labels(seeds, radius):
    """B x H x W seeds (1 lesion, 0 background, IGNORE uncertain) -> bool B x D x N masks of the pairs
    (aligned with ``path_max_affinity``): background pairs, lesion pairs, pairs of different classes. A pair
    with an uncertain end, or an end outside the map, is in none."""
    height, width = seeds.shape[-2:]
    _, dst, valid, _ = pair_index(height, width, float(radius), str(seeds.device))
    source = seeds.flatten(1)[:, None, :]
    other = seeds.flatten(1)[:, dst].where(valid, IGNORE)
    known = (source != IGNORE) & (other != IGNORE)
    same = known & (source == other)
    return same & (source == 0), same & (source == 1), known & (source != other)


def seed_labels(cam, fg_threshold, bg_threshold):
    """B x H x W CAM in [0, 1] -> seeds: 1 where it is at least ``fg_threshold``, 0 below ``bg_threshold``,
    IGNORE between."""
    seeds = torch.full(cam.shape, IGNORE, dtype=torch.long, device=cam.device)
    seeds[cam >= fg_threshold] = 1
    seeds[cam < bg_threshold] = 0
    return seeds


def _pair_mean(loss, mask):
    return (loss * mask).sum() / (mask.sum() + 1e-5)


def boundary_losses(affinity, labels):
    """IRN's class-boundary loss terms: (background pairs, lesion pairs, pairs of different classes), each a
    mean over its pairs of -log(affinity) (same class) or -log(1 - affinity) (different)."""
    bg_pos, fg_pos, neg = labels
    pos_loss = -torch.log(affinity + 1e-5)
    return _pair_mean(pos_loss, bg_pos), _pair_mean(pos_loss, fg_pos), _pair_mean(-torch.log(1 + 1e-5 - affinity), neg)


def dense_affinity(boundary, radius):
    """B x H x W boundary map -> B x N x N affinities for models/random_walk: path-max affinities between
    positions within ``radius`` (both ways), 1 on the diagonal, 0 beyond the radius."""
    batch, height, width = boundary.shape
    count = height * width
    _, dst, valid, _ = pair_index(height, width, float(radius), str(boundary.device))
    affinity = path_max_affinity(boundary, radius)[:, valid]
    source = torch.arange(count, device=boundary.device).expand_as(dst)[valid]
    dense = torch.eye(count, device=boundary.device).repeat(batch, 1, 1)
    dense[:, source, dst[valid]] = affinity
    dense[:, dst[valid], source] = affinity
    return dense


def boundary_random_walk(cam, boundary, radius, beta, lengths):
    """IRN's propagation: B x H x W CAM times (1 - boundary), walked along ``dense_affinity`` (one image at a
    time: the N x N matrix is the memory) -> {t: the B x H x W walk of t steps} for each t in ``lengths``."""
    per_image = [walks((c * (1 - b))[None, None], dense_affinity(b[None], radius), beta, lengths)
                 for c, b in zip(cam.float(), boundary.float())]
    return {t: torch.cat([walked[t][:, 0] for walked in per_image]) for t in lengths}


# ---- the class-boundary network ----

def _resized(features, size):
    """Features brought to ``size``: averaged down (the stride-2 level), bilinearly up (the deeper ones)."""
    if features.shape[-1] > size[-1]:
        return F.adaptive_avg_pool2d(features, size)
    return F.interpolate(features, size=size, mode='bilinear', align_corners=False)


class BoundaryNet(nn.Module):
    """Images B x C x H x W -> class-boundary map B x H/4 x W/4 in [0, 1]: each encoder level projected to
    ``width`` channels (1x1 convolution, GroupNorm, ReLU), resized to stride 4, joined by a 1x1 convolution.
    A ``frozen`` encoder (the pretrained one, as IRN's) is neither trained nor differentiated through."""

    def __init__(self, encoder, width, frozen):
        super().__init__()
        self.encoder, self.frozen = encoder, frozen
        if frozen:
            set_requires_grad([encoder], False)
        self.project = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1, bias=False), _norm(width), nn.ReLU(True))
                                     for c in encoder.channels)
        self.head = nn.Conv2d(width * len(encoder.channels), 1, 1)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, images):
        size = (images.shape[-2] // STRIDE, images.shape[-1] // STRIDE)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            levels = self.encoder(images)
        joined = torch.cat([_resized(project(level), size) for project, level in zip(self.project, levels)], 1)
        return torch.sigmoid(self.head(joined).float())[:, 0]


def boundary_network(opt):
    """The boundary network on the encoder ``opt.encoder`` names (ImageNet weights loaded only to train)."""
    if getattr(opt, 'encoder', 'scratch') == 'scratch':
        return BoundaryNet(ScratchTaps(opt.img_ch, opt.ch, SCRATCH_TAPS), opt.ch, frozen=False)
    return BoundaryNet(PretrainedEncoder(pretrained=opt.is_train), opt.ch, frozen=True)


IRN_FLAGS = (
    ('--irn_cam_weights', str, '', 'the trained CAM IRN starts from (frozen): a checkpoint of a --model cam run '
                                   '(<run>/checkpoints/iter_*.pt) or its exported weights file; recorded as given'),
    ('--irn_fg_threshold', float, 0.3, 'CAM (scaled to its maximum) at or above which a lesion-image position is a '
                                       'confident lesion seed (IRN 0.30, there after a CRF)'),
    ('--irn_bg_threshold', float, 0.05, 'CAM below which a position is a confident background seed (IRN 0.05); '
                                        'between the two thresholds seeds are uncertain and form no pair'),
    ('--irn_radius', float, 5, 'pairs within this many stride-4 positions are labelled (IRN 10 on 512-px crops); '
                               'the random walk uses half of it, as IRN walks within 5 (stored in the checkpoints)'),
    ('--irn_beta', float, 10, 'the random walk raises the affinities to this power (IRN 10; stored in the '
                              'checkpoints)'),
    ('--irn_steps', int, 256, "random-walk steps of the 'irn' map (IRN: 2^8 = 256, by squaring; stored in the "
                              "checkpoints); the 'irn-tT' maps walk T = 4, 16, 64 (at most this)"),
)


class IRNModel(BaseModel):
    """IRN's class-boundary network on a frozen CAM (``--model irn``), trained by train.py and served by
    test.py: the CAM and the boundary-walked CAM as lesion maps."""

    model_names = ['classifier', 'boundary']
    loss_names = ['bg_pos', 'fg_pos', 'neg']
    loss_groups = {'IRN boundary loss (pairs: background, lesion, different)': ['bg_pos', 'fg_pos', 'neg']}
    visual_names = ['real_A', 'cam_A', 'seeds_A', 'boundary_A', 'real_B', 'boundary_B']
    map_modes = ('cam', *walk_modes('irn', 1))
    map_modes_help = "cam, irn (the CAM walked --irn_steps within IRN's class boundaries), irn-t4, irn-t16, " \
                     "irn-t64 (walked 4, 16, 64 steps)"
    # The CAM's shape (from its file) and the walk's settings travel with the networks: test.py has no IRN flags.
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch', 'irn_cam_ch', 'irn_cam_encoder',
                         'irn_radius', 'irn_beta', 'irn_steps')
    optional_architecture = {'encoder': 'scratch'}
    flag_ranges = {'irn_fg_threshold': (0, 1), 'irn_bg_threshold': (0, 1), 'irn_radius': (2, 32),
                   'irn_beta': (0, None), 'irn_steps': (0, None)}

    @staticmethod
    def modify_commandline_options(parser, groups):
        add_flag_table(parser.add_argument_group('IRN (--model irn)'), IRN_FLAGS)

    def __init__(self, opt):
        super().__init__(opt)
        if opt.is_train:
            classifier, cam = self._trained_cam(opt)
            self.opt = opt = argparse.Namespace(**vars(opt), irn_cam_ch=cam['ch'],
                                                irn_cam_encoder=cam.get('encoder', 'scratch'))
        else:
            classifier = classifier_network(argparse.Namespace(
                img_ch=opt.img_ch, ch=opt.irn_cam_ch, encoder=opt.irn_cam_encoder, is_train=False))
            set_requires_grad([classifier], False)
        self.classifier = self.place(classifier.eval())
        self.boundary = self.place(boundary_network(opt))
        if opt.is_train:
            self.optimizers = {'irn': self.adam([p for p in self.boundary.parameters() if p.requires_grad])}
            self.scalers = {'irn': self.grad_scaler()}

    def _trained_cam(self, opt):
        """The frozen CAM of --irn_cam_weights and its architecture, checked against this run's images."""
        if opt.irn_bg_threshold > opt.irn_fg_threshold:
            raise SystemExit(f'error: --irn_bg_threshold {opt.irn_bg_threshold} is above --irn_fg_threshold '
                             f'{opt.irn_fg_threshold}: the background seeds must lie below the lesion seeds')
        classifier, cam = load_frozen_cam(opt.irn_cam_weights, self.device)
        if cam['img_ch'] != opt.img_ch:
            raise SystemExit(f'error: --irn_cam_weights {opt.irn_cam_weights} was trained on {cam["img_ch"]}-channel '
                             f'images, these have {opt.img_ch}; pass a CAM of this dataset')
        if cam['img_size'] != opt.img_size:
            print(f'note: the CAM of {opt.irn_cam_weights} was trained at {cam["img_size"]} px, IRN trains at '
                  f'{opt.img_size} px (--img_size)')
        return classifier, cam

    def train(self, mode=True):
        self.boundary.train(mode)  # the CAM stays frozen, in eval mode

    def wrap_distributed(self, wrap):
        """Only the boundary network trains (DDP refuses a network without trained weights)."""
        self.boundary = wrap(self.boundary)

    def optimize_parameters(self):
        """One Adam step of IRN's boundary loss on the pairs the frozen CAM's seeds label (normal images:
        background seeds everywhere)."""
        images = torch.cat([self.real_A, self.real_B], 0)
        classifier = _unwrap(self.classifier)
        with torch.no_grad(), self.autocast():
            _, features = classifier(images)
        with self.autocast():
            boundary = self.boundary(images)
        cam = class_activation_map(classifier, features, boundary.shape[-2:])
        seeds = seed_labels(cam, self.opt.irn_fg_threshold, self.opt.irn_bg_threshold)
        seeds[len(self.real_A):] = 0
        affinity = path_max_affinity(boundary, self.opt.irn_radius)
        self.loss_bg_pos, self.loss_fg_pos, self.loss_neg = boundary_losses(
            affinity, relation_labels(seeds, self.opt.irn_radius))
        self.step_optimizer(((self.loss_bg_pos + self.loss_fg_pos) / 2 + self.loss_neg) / 2, 'irn')
        self._set_visuals(cam, seeds.float(), boundary.detach())

    def _set_visuals(self, cam, seeds, boundary):
        """Training visuals in [-1, 1] at the image size; seeds: black background, grey uncertain, white lesion."""
        n_a, size = len(self.real_A), self.real_A.shape[-2:]

        def shown(maps):
            return F.interpolate(maps[:, None], size=size, mode='nearest') * 2 - 1
        self.cam_A = shown(cam[:n_a])
        self.seeds_A = shown(torch.where(seeds[:n_a] == IGNORE, 0.5, seeds[:n_a]))
        self.boundary_A, self.boundary_B = shown(boundary).split([n_a, len(self.real_B)])

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'cam': the frozen CAM, 'irn', 'irn-tT': the CAM walked
        within the class boundaries, scaled to its maximum}, 'score': the CAM classifier's lesion probability (B,),
        'heatmap': the CAM, 'boundary': the class-boundary map}, maps B x H x W in [0, 1]."""
        images = self.to_device(images)
        classifier, size = _unwrap(self.classifier), images.shape[-2:]
        with self.autocast():
            logits, features = classifier(images)
            boundary = _unwrap(self.boundary)(images)
        cam = class_activation_map(classifier, features, size)
        seeds = class_activation_map(classifier, features, boundary.shape[-2:])
        lengths = walk_modes('irn', self.opt.irn_steps)
        walked = boundary_random_walk(seeds, boundary, self.opt.irn_radius / 2, self.opt.irn_beta,
                                      set(lengths.values()))
        maps = {mode: scaled_to_peak(F.interpolate(walked[steps][:, None], size=size, mode='bilinear',
                                                   align_corners=False)[:, 0]) for mode, steps in lengths.items()}
        boundary = F.interpolate(boundary[:, None], size=size, mode='bilinear', align_corners=False)[:, 0]
        return {'maps': {'cam': cam, **maps}, 'score': torch.sigmoid(logits.float()), 'heatmap': cam,
                'boundary': boundary}
