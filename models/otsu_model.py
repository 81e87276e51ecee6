"""Training-free reference (``--model otsu``): Otsu threshold of the image intensity, largest component.

A lesion is darker than the skin around it in dermoscopy and brighter than the brain in FLAIR, so the
map is offered in both orientations: ``dark`` = 1 - grey, ``bright`` = grey. test.py picks the one
with the better val Dice (or takes ``--map_mode dark|bright``); the rest of the rule is fixed:
each image's Otsu threshold over its foreground, then the largest connected component.
"""
import torch

from .base_model import BaseModel


class OtsuModel(BaseModel):
    """No networks and no training: test.py builds it without a checkpoint."""

    needs_checkpoint = False
    # How a map becomes a mask is part of this method, so val chooses only the orientation.
    fixed_rule = {'binarize': 'otsu', 'threshold': None, 'postprocess': 'largest'}
    map_modes = ('dark', 'bright')
    architecture_keys = ('model', 'img_size', 'img_ch')

    def __init__(self, opt):
        if opt.is_train:
            raise SystemExit('error: --model otsu is training-free: run test.py (and crf.py) directly, '
                             'no train.py needed')
        super().__init__(opt)

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> {'maps': {'dark': 1 - grey, 'bright': grey}}, B x H x W
        in [0, 1] (grey = the channel mean). No image-level score: the method has no classifier."""
        grey = ((self.to_device(images).float().mean(1) + 1) / 2).clamp(0, 1)
        return {'maps': {'dark': 1 - grey, 'bright': grey}}
