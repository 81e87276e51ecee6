"""SEAM's pixel correlation module (Wang et al. 2020, "Self-supervised Equivariant Attention Mechanism for
Weakly Supervised Semantic Segmentation"), shared by ``--model pcm`` and ``--model seam``.

PCM refines a class map by the similarity between pixels: with per-position feature vectors f (L2-normalised),
the affinity of positions i and j is ReLU(f_i . f_j), each column is normalised to sum to one, and position j's
new score is the affinity-weighted mean of the scores of every position: ``y_j = sum_i a_ij x_i / sum_i a_ij``.
That is one step of models/random_walk.py's walk with beta 1 over all pairs (no radius), so it is computed by it.
A map already constant over each group of mutually similar positions comes out unchanged.

Also here: the stage features of the CAM classifier that PCM's features are built from, and the min-max map
normalisation SEAM's losses compare maps with.
"""
import torch
import torch.nn.functional as F

from .cam_model import PretrainedCAMClassifier, block_outputs
from .random_walk import random_walk


def cosine_affinity(features: torch.Tensor) -> torch.Tensor:
    """B x C x h x w features -> B x N x N cosine similarities between the positions (N = h * w)."""
    flat = features.float().flatten(2)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-5)
    return flat.transpose(1, 2) @ flat


def pixel_correlation(maps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """PCM: B x K x h x w maps refined by the ReLU'd cosine affinities of B x C x h x w features."""
    if maps.shape[-2:] != features.shape[-2:]:
        raise ValueError(f'maps of size {tuple(maps.shape[-2:])} and features of size '
                         f'{tuple(features.shape[-2:])}: PCM needs them on one grid')
    # random_walk's transition matrix clamps the affinities at 0 (SEAM's ReLU) and normalises columns.
    return random_walk(maps.float(), cosine_affinity(features), beta=1.0, steps=1)


def classifier_stages(classifier, images):
    """Images -> (lesion logits B, [middle, deep, last] feature maps) of a CAM classifier (models/cam_model.py):
    the last is what its CAM is computed from; the two before it stand for SEAM's conv4 and conv5."""
    if isinstance(classifier, PretrainedCAMClassifier):
        stages = classifier.encoder(images)[2:]  # strides 8, 16, 16 (its last stage kept at stride 16)
    else:
        # CAMClassifier: two basic blocks per stage; the ends of its last three stages (strides 4, 8, 8).
        stages = block_outputs(classifier.stem, classifier.features, images, (3, 5, 7))
    return classifier.fc(stages[-1].mean((2, 3)))[:, 0], stages


def stage_channels(classifier):
    """The channel counts of ``classifier_stages``' three feature maps."""
    if isinstance(classifier, PretrainedCAMClassifier):
        return classifier.encoder.channels[2:]
    width = classifier.fc.in_features  # CAMClassifier's stages are ch, 2ch, 4ch, 8ch wide
    return width // 4, width // 2, width


def lesion_cam(classifier, features):
    """The CAM at feature resolution, ReLU'd and divided by its per-image maximum: B x 1 x h x w in [0, 1]."""
    cam = F.relu(classifier.activation_map(features))[:, None]
    return cam / cam.flatten(1).max(1)[0].clamp_min(1e-5)[:, None, None, None]


def unit_map(maps, size):
    """B x 1 x h x w maps -> B x H x W at ``size`` (bilinear), ReLU'd and divided by the per-image maximum."""
    maps = F.interpolate(F.relu(maps.float()), size=tuple(size), mode='bilinear', align_corners=False)[:, 0]
    return (maps / maps.flatten(1).max(1)[0].clamp_min(1e-12)[:, None, None]).clamp(0, 1)


def served_maps(logits, cam, refined, size):
    """``infer``'s answer of a model with a CAM and its PCM refinement (B x 1 x h x w each): {'maps': {'cam',
    'pcm'} B x H x W in [0, 1] at ``size``, 'score': the lesion probability (B,), 'heatmap': the PCM map}."""
    maps = {'cam': unit_map(cam, size), 'pcm': unit_map(refined, size)}
    return {'maps': maps, 'score': torch.sigmoid(logits.float()), 'heatmap': maps['pcm']}


def max_norm(maps, eps=1e-5):
    """SEAM's normalisation of a map before its losses: ReLU, then min-max per image and channel to [0, 1)."""
    maps = F.relu(maps)
    low = maps.flatten(2).min(2)[0][..., None, None]
    high = maps.flatten(2).max(2)[0][..., None, None]
    return F.relu(maps - low - eps) / (high - low + eps)
