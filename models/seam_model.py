"""SEAM (Wang et al. 2020, "Self-supervised Equivariant Attention Mechanism for Weakly Supervised Semantic
Segmentation"): the CAM classifier trained as a siamese network on an image and its affine-transformed copy.

Each training step runs the classifier (models/cam_model.py) on the batch and on its copy rescaled by
``--seam_scale`` (and flipped left-right with ``--seam_flip``: the affine transform A). Both branches give a CAM
and the CAM refined by the pixel correlation module (PCM, models/pcm.py), whose features are learned 1x1
projections of two intermediate feature maps (detached from the classifier) beside the resized image. The loss:
- classification: the mean of both branches' BCE with the weak labels (lesion 1, normal 0);
- equivariant regularisation (ER): mean |A(CAM(x)) - CAM(A(x))|, the maps made comparable by SEAM's min-max
  normalisation;
- equivariant cross regularisation (ECR): each branch's PCM map against the other branch's (detached) CAM
  brought to the same geometry, the mean of the largest ``--seam_ecr_top`` share of the differences per image.
Maps: 'cam' (the raw CAM, as ``--model cam`` serves it) and 'pcm' (the refined one, SEAM's output).

Kept: the siamese branches, ER and ECR as SEAM's code computes them (L1, min-max normalised maps multiplied by
the image's label so a normal image's lesion map counts as zero, the top-k ECR), PCM on the detached ReLU'd CAM
divided by its maximum, with 64- and 128-channel projections mixed into 192 by a 1x1 layer.
Simplified, for the two-class problem and this project:
- one lesion channel instead of SEAM's background + classes: PCM is linear with columns summing to one, so the
  background (1 - lesion) gains nothing new, and SEAM's ECR on both channels equals ECR on the lesion channel
  for a lesion image. For a normal image SEAM keeps a background-only ECR term; here it is zero like its ER.
- no adaptive min-pooling loss on the PCM map (SEAM's code: it "does not affect the highest performance"),
  no dropout before the classifier, Adam with the project's learning rate instead of SEAM's poly SGD.
- ``--seam_scale`` 0.5 where SEAM's code downscales 448-px crops by 0.3: at 256 px that would leave a 5 x 5
  CAM on the pretrained encoder's stride-16 grid.
- inference at one scale, no flips (like the CAM baseline), where SEAM averages four scales and their flips.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .base_model import BaseModel, _unwrap
from .cam_model import classifier_network
from .pcm import classifier_stages, lesion_cam, max_norm, pixel_correlation, served_maps, stage_channels


class SEAMNet(nn.Module):
    """A CAM classifier with SEAM's PCM head: images -> (lesion logits B, raw CAM B x 1 x h x w,
    PCM-refined CAM B x 1 x h x w)."""

    def __init__(self, classifier, img_ch):
        super().__init__()
        self.classifier = classifier
        middle, deep, _ = stage_channels(classifier)
        self.project_middle = nn.Conv2d(middle, 64, 1, bias=False)
        self.project_deep = nn.Conv2d(deep, 128, 1, bias=False)
        self.mix = nn.Conv2d(img_ch + 192, 192, 1, bias=False)
        nn.init.kaiming_normal_(self.project_middle.weight)
        nn.init.kaiming_normal_(self.project_deep.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)  # SEAM's: a wide initial spread of similarities

    def forward(self, images):
        logits, stages = classifier_stages(self.classifier, images)
        cam = self.classifier.activation_map(stages[-1])[:, None]
        size = cam.shape[-2:]
        with torch.no_grad():
            seed = lesion_cam(self.classifier, stages[-1])
        # PCM's gradients train its own layers only: the classifier's features enter detached, as in SEAM.
        middle = F.relu(self.project_middle(F.adaptive_avg_pool2d(stages[0].detach(), size)))
        deep = F.relu(self.project_deep(F.adaptive_avg_pool2d(stages[1].detach(), size)))
        features = self.mix(torch.cat([F.adaptive_avg_pool2d(images, size), middle, deep], 1))
        return logits, cam, pixel_correlation(seed, features)


def affine_transform(tensor, scale, flip):
    """SEAM's transform A of B x C x H x W images or maps: rescaled by ``scale`` (bilinear), then flipped
    left-right when ``flip``."""
    height, width = tensor.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = F.interpolate(tensor, size=size, mode='bilinear', align_corners=False)
    return tensor.flip(-1) if flip else tensor


def _full_size(maps, like):
    """B x 1 x h x w maps upsampled to the images ``like``'s size and min-max normalised (SEAM's max_norm)."""
    return max_norm(F.interpolate(maps.float(), size=like.shape[-2:], mode='bilinear', align_corners=False))


def top_share_mean(difference, share):
    """The mean of each image's largest ``share`` of |difference| values, averaged over the batch (SEAM's ECR)."""
    flat = difference.abs().flatten(1)
    return flat.topk(max(1, int(share * flat.shape[1])), dim=1)[0].mean()


def siamese_losses(branch, images, labels, scale, flip, top_share):
    """SEAM's losses of one batch: {'cls', 'er', 'ecr'}, and the first branch's CAM and PCM maps (B x 1 x H x W,
    min-max normalised). ``branch``: images -> (logits, CAM, PCM map) as SEAMNet; labels: 1 lesion, 0 normal."""
    copy = affine_transform(images, scale, flip)
    logits, cam, refined = branch(images)
    logits_copy, cam_copy, refined_copy = branch(copy)
    cls = (F.binary_cross_entropy_with_logits(logits.float(), labels)
           + F.binary_cross_entropy_with_logits(logits_copy.float(), labels)) / 2
    mask = labels[:, None, None, None]
    cam, refined = _full_size(cam, images), _full_size(refined, images)
    # Both branches compared on the copy's grid; a normal image's lesion maps count as zero (SEAM's label mask).
    moved_cam, moved_refined = (affine_transform(m, scale, flip) * mask for m in (cam, refined))
    cam_copy, refined_copy = (_full_size(m, copy) * mask for m in (cam_copy, refined_copy))
    losses = {'cls': cls, 'er': (moved_cam - cam_copy).abs().mean(),
              'ecr': top_share_mean(moved_refined - cam_copy.detach(), top_share)
              + top_share_mean(refined_copy - moved_cam.detach(), top_share)}
    return losses, cam, refined


class SEAMModel(BaseModel):
    """SEAM (``--model seam``): the siamese CAM classifier with ER, PCM and ECR."""

    model_names = ['seam']
    loss_names = ['cls', 'er', 'ecr']
    loss_groups = {'classification BCE': ['cls'], 'equivariance L1 (ER, ECR)': ['er', 'ecr']}
    visual_names = ['real_A', 'cam_A', 'pcm_A', 'real_B', 'cam_B', 'pcm_B']
    map_modes = ('cam', 'pcm')
    map_modes_help = 'cam, pcm (the CAM refined by the pixel correlation module: SEAM\'s map)'
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch')
    optional_architecture = {'encoder': 'scratch'}
    flag_ranges = {'seam_scale': (0.1, 1.0), 'seam_ecr_top': (0.01, 1.0)}

    @staticmethod
    def modify_commandline_options(parser, groups):
        g = parser.add_argument_group('SEAM (--model seam)')
        g.add_argument('--seam_scale', type=float, default=0.5,
                       help="the siamese copy's size as a share of the image's (SEAM's code: 0.3 of 448 px)")
        g.add_argument('--seam_flip', type='bool', default=True,
                       help='True: the siamese copy is also flipped left-right')
        g.add_argument('--seam_ecr_top', type=float, default=0.2,
                       help="the share of each image's largest PCM-vs-CAM differences the ECR loss averages")

    def __init__(self, opt):
        super().__init__(opt)
        self.seam = self.place(SEAMNet(classifier_network(opt), opt.img_ch))
        if opt.is_train:
            self.single_adam('seam', self.seam)

    def _branch(self, images):
        with self.autocast():
            return self.seam(images)

    def optimize_parameters(self):
        """One Adam step of classification + ER + ECR (weights 1, as SEAM)."""
        images = torch.cat([self.real_A, self.real_B], 0)
        labels = torch.cat([torch.ones(len(self.real_A)), torch.zeros(len(self.real_B))]).to(self.device)
        opt = self.opt
        losses, cam, refined = siamese_losses(self._branch, images, labels, opt.seam_scale, opt.seam_flip,
                                              opt.seam_ecr_top)
        self.loss_cls, self.loss_er, self.loss_ecr = losses['cls'], losses['er'], losses['ecr']
        self.step_optimizer(self.loss_cls + self.loss_er + self.loss_ecr, 'seam')
        # Visuals are shown in [-1, 1] like the images.
        split = [len(self.real_A), len(self.real_B)]
        self.cam_A, self.cam_B = (cam.detach() * 2 - 1).split(split)
        self.pcm_A, self.pcm_B = (refined.detach() * 2 - 1).split(split)

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'cam', 'pcm'} B x H x W in [0, 1], 'score': the lesion
        probability (B,), 'heatmap': the PCM map}."""
        images = self.to_device(images)
        with self.autocast():
            logits, cam, refined = _unwrap(self.seam)(images)
        return served_maps(logits, cam, refined, images.shape[-2:])
