"""Stage-2 training items: an image, its (pseudo- or true) lesion mask and per-pixel loss weights.

pseudo.py writes, under a stage-1 run folder, ``pseudo/A/masks/NAME.png`` and
``pseudo/A/confidence/NAME.png`` for every lesion (A) training image and ``pseudo/B/masks/NAME.png``
(empty) for every normal (B) one (records/run_folder.py names them; train.py lists them as MaskedImage).
The few-shot folder (``few_sample/<name>/A`` images,
``few_sample/<name>/B/NAME_segmentation.png`` masks) adds labelled images with full confidence.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.image_io import ImageReadError, read_image, read_mask
from data.layout import few_shot_pairs
from data.weak_dataset import WeakImageDataset, resize_square, to_float_tensor

@dataclass(frozen=True)
class MaskedImage:
    """One training image: its mask file, its confidence file (None: every pixel certain) and the weight
    of all its pixels in the loss."""
    image: str
    mask: str
    confidence: Optional[str] = None
    weight: float = 1.0


def few_shot_items(folder_dir, name, weight):
    """MaskedImage of every labelled image of ``few_sample/<name>`` (see data.layout.few_shot_pairs)."""
    pairs = few_shot_pairs(folder_dir, name)
    return [MaskedImage(image, label, None, weight) for image, label in pairs]


def read_confidence(path):
    """8-bit confidence PNG -> float32 H x W in [0, 1]."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert('L'), dtype=np.float32) / 255.0
    except (OSError, ValueError) as error:
        raise ImageReadError(path, f'not a readable confidence map ({type(error).__name__})') from None


class PseudoMaskDataset(Dataset):
    """Items ``{'image': img_ch x S x S in [-1, 1], 'target': 1 x S x S in {0, 1}, 'weight': 1 x S x S,
    'path'}``: pixels whose confidence is below ``min_confidence`` get weight 0, the others the item's
    weight. Augmentation (``augment``, ``jitter``, ``rot90``) is the stage-1 one, applied to mask and weights alike."""

    def __init__(self, items, img_size, img_ch=3, min_confidence=0.5, augment=True, jitter=0.1, rot90=False):
        self.items = list(items)
        # Reuses the weak dataset's augmentation, so both stages see images transformed the same way.
        self.transform = WeakImageDataset([item.image for item in self.items], img_size, img_ch, augment,
                                          jitter=jitter, rot90=rot90)
        self.min_confidence = min_confidence

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        raw = read_image(item.image)
        mask = torch.from_numpy(read_mask(item.mask)).float()
        if tuple(mask.shape) != raw.shape[:2]:
            raise ValueError(f'mask {item.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {item.image} '
                             f'is {raw.shape[1]}x{raw.shape[0]}; rerun pseudo.py or fix the mask')
        keep = torch.ones_like(mask)
        if item.confidence:
            keep = (torch.from_numpy(read_confidence(item.confidence)) >= self.min_confidence).float()
        image = to_float_tensor(raw, self.transform.img_ch)
        extra = torch.stack([mask, keep])
        if self.transform.augment:
            image, extra = self.transform.random_transform(image, extra)
        else:
            image, extra = resize_square(image, self.transform.img_size), resize_square(extra, self.transform.img_size)
        # Both are resampled with the image; thresholding makes them exact 0/1 again.
        return {'image': image.mul_(2.0).sub_(1.0), 'target': (extra[:1] >= 0.5).float(),
                'weight': (extra[1:] >= 0.5).float() * item.weight, 'path': item.image}
