"""PCM baseline: the CAM classifier (models/cam_model.py), its maps refined by SEAM's pixel correlation module.

The "PCM" row of the comparison (Wang et al. 2020): a CAM baseline plus PCM. The classifier is trained exactly
as ``--model cam`` (the same code: this model subclasses it); at inference its CAM is refined by PCM
(models/pcm.py): each position's score becomes the mean of every position's score, weighted by the ReLU'd
cosine similarity of their features. test.py chooses on val between the raw map ('cam') and the refined one
('pcm').

Kept from SEAM: PCM's arithmetic, its input (the ReLU'd CAM divided by its maximum, at feature resolution)
and its features (the image resized to the CAM's grid beside two intermediate feature maps of the classifier,
SEAM's conv4 and conv5; here the two stages before the last, pooled to the CAM's grid).
Simplified: SEAM learns 1x1 projections of those features through its cross regularisation loss, which needs
the siamese training (``--model seam``). Without it there is nothing to train them on, so PCM here runs on the
features themselves, each source centred over the image's positions and scaled to unit mean norm before they
are concatenated: the network's features are ReLU outputs, all of whose cosines are positive, so without
centring PCM would average over nearly the whole image; centred, dissimilar positions have negative
similarities that the ReLU cuts, as SEAM's signed learned features do. One image scale, no flips (like the
CAM baseline), where SEAM's inference averages four scales and their flips.
"""
import torch
import torch.nn.functional as F

from .base_model import _unwrap
from .cam_model import CAMModel
from .pcm import classifier_stages, lesion_cam, pixel_correlation, served_maps


def correlation_features(images, stages, size):
    """PCM's parameter-free features on the CAM's ``size`` grid: the image and the middle and deep stage
    features, each pooled to that grid, centred over its positions and divided by its mean norm, concatenated."""
    parts = []
    for part in (images, *stages[:-1]):
        part = F.adaptive_avg_pool2d(part.float(), tuple(size))
        part = part - part.mean((2, 3), keepdim=True)
        parts.append(part / part.norm(dim=1).mean((1, 2)).clamp_min(1e-5)[:, None, None, None])
    return torch.cat(parts, 1)


class PCMModel(CAMModel):
    """The CAM classifier, trained as ``--model cam``, served with its PCM-refined map (``--model pcm``)."""

    map_modes = ('cam', 'pcm')
    map_modes_help = 'cam, pcm (the CAM refined by the pixel correlation module)'

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'cam', 'pcm'} B x H x W in [0, 1], 'score': the lesion
        probability (B,), 'heatmap': the PCM map}."""
        images = self.to_device(images)
        classifier = _unwrap(self.classifier)
        with self.autocast():
            logits, stages = classifier_stages(classifier, images)
        cam = lesion_cam(classifier, stages[-1])
        refined = pixel_correlation(cam, correlation_features(images, stages, cam.shape[-2:]))
        return served_maps(logits, cam, refined, images.shape[-2:])
