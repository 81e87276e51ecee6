"""Image + mask pairs of an evaluation split (val, testA, testB), for test.py and crf.py.

The network sees the image resized to ``img_size``; the mask and the raw image stay at the original
size, because predictions are scored and written at the original size (docs/DESIGN.md).
"""
import os

import torch
from torch.utils.data import Dataset

from data.image_io import ImageReadError, read_image, read_mask
from data.weak_dataset import resize_square, to_float_tensor

ITEM_KEYS = ('image', 'mask', 'name', 'path', 'orig_size', 'raw')


def network_input(raw, img_size, img_ch):
    """uint8 H x W x 3 image -> the network's input: float img_ch x img_size x img_size in [-1, 1]."""
    return resize_square(to_float_tensor(raw, img_ch), img_size).mul_(2.0).sub_(1.0)


class LabeledDataset(Dataset):
    """Images of one split with their masks when they have one.

    Args:
        pairs: (image_path, label_path or None) pairs, e.g. from ``data.layout.check_split``.
        img_size: side of the square network input.
        img_ch: 1 (grayscale) or 3 (RGB).
        report_unreadable: an image that cannot be read gives the item ``{'unreadable': one-line
            message, 'path', 'name'}`` instead of raising ImageReadError (a stream goes on without it).

    Items: ``image`` float img_ch x img_size x img_size in [-1, 1] (bilinear resize); ``mask`` bool
    HxW at the original size, or an empty 0x0 bool tensor when the image has no label; ``name``
    (file stem); ``path``; ``orig_size`` (H, W); ``raw`` uint8 HxWx3 tensor of the original image.
    """

    def __init__(self, pairs, img_size, img_ch=3, report_unreadable=False):
        self.pairs = [(str(image), None if label is None else str(label)) for image, label in pairs]
        if not self.pairs:
            raise ValueError('LabeledDataset needs at least one (image, label) pair')
        if img_ch not in (1, 3):
            raise ValueError(f'img_ch must be 1 (grayscale) or 3 (RGB), got {img_ch}')
        self.img_size = int(img_size)
        self.img_ch = img_ch
        self.report_unreadable = report_unreadable

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image_path, label_path = self.pairs[index]
        name = os.path.splitext(os.path.basename(image_path))[0]
        try:
            raw = read_image(image_path)
        except ImageReadError as error:
            if not self.report_unreadable:
                raise
            return {'unreadable': str(error), 'path': image_path, 'name': name}
        height, width = raw.shape[:2]
        image = network_input(raw, self.img_size, self.img_ch)
        if label_path is None:
            mask = torch.zeros((0, 0), dtype=torch.bool)
        else:
            mask = torch.from_numpy(read_mask(label_path))
            if tuple(mask.shape) != (height, width):
                raise ValueError(f'mask {label_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image '
                                 f'{image_path} is {width}x{height}; masks must have their image\'s size')
        return {'image': image, 'mask': mask, 'name': name, 'path': image_path, 'orig_size': (height, width),
                'raw': torch.from_numpy(raw)}


def collate_labeled(batch):
    """Stack ``image`` into a B x C x S x S tensor (None when no image of the batch could be read); keep
    every other key as a list (sizes may differ), and the unreadable items as a list under ``unreadable``."""
    readable = [item for item in batch if 'unreadable' not in item]
    collated = {key: [item[key] for item in readable] for key in ITEM_KEYS}
    collated['image'] = torch.stack(collated['image']) if readable else None
    collated['unreadable'] = [item for item in batch if 'unreadable' in item]
    return collated
