"""Images of one weak-label folder (all with a lesion, or all without), for training.

One dataset per folder, so train.py gives A and B each its own sampler and loader (under DDP, a
DistributedSampler per folder) and the two streams stay unaligned, as in the paper.
"""
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from data.image_io import read_image


def to_float_tensor(rgb, img_ch):
    """uint8 HxWx3 numpy array -> float CxHxW tensor in [0, 1]; ``img_ch=1`` gives grayscale."""
    if img_ch not in (1, 3):
        raise ValueError(f'img_ch must be 1 (grayscale) or 3 (RGB), got {img_ch}')
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    return F.rgb_to_grayscale(tensor) if img_ch == 1 else tensor


def resize_square(tensor, size):
    """Bilinear (antialiased) resize of a CxHxW float tensor to ``size`` x ``size``."""
    return F.resize(tensor, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)


def default_load_size(img_size):
    """Size images are resized to before the random crop (the paper's 256 -> 306 margin, scaled)."""
    return img_size + round(50 * img_size / 256)


class WeakImageDataset(Dataset):
    """Images of one weak-label folder.

    Args:
        paths: image file paths (e.g. ``data.image_io.list_images(dir_A)``).
        img_size: side of the square output image.
        img_ch: 1 (grayscale) or 3 (RGB).
        augment: random flips, resize to ``load_size`` + random crop, brightness/contrast jitter
            (factors in ``1 +- jitter``); off: plain resize to ``img_size``.
        load_size: size before the random crop; default ``default_load_size(img_size)``.
        jitter: half-width of the brightness and contrast factor range.
        rot90: augmentation also turns the image by a random multiple of 90 degrees.
        degrade: probability that augmentation first shrinks the image to a random side drawn from
            ``degrade_range`` (pixels of a 256-px image) and enlarges it back, the resolution loss
            of patches cut small and upsampled (ISIC's normal images).
        degrade_range: (smallest, largest) side of that shrink, in pixels of a 256-px image.

    Items are ``{'image': float tensor img_ch x img_size x img_size in [-1, 1], 'path': str}``.
    Randomness comes only from torch's global RNG, so ``torch.manual_seed`` and DataLoader worker
    seeding make augmentation reproducible.
    """

    def __init__(self, paths, img_size, img_ch=3, augment=False, load_size=None, jitter=0.1, rot90=False,
                 degrade=0.0, degrade_range=(72, 144)):
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError('WeakImageDataset needs at least one image path')
        if img_ch not in (1, 3):
            raise ValueError(f'img_ch must be 1 (grayscale) or 3 (RGB), got {img_ch}')
        self.img_size = int(img_size)
        self.img_ch = img_ch
        self.augment = augment
        self.load_size = default_load_size(self.img_size) if load_size is None else int(load_size)
        if self.load_size < self.img_size:
            raise ValueError(f'load_size ({self.load_size}) must be at least img_size ({self.img_size})')
        self.jitter = jitter
        self.rot90 = rot90
        self.degrade = degrade
        self.degrade_range = tuple(degrade_range)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        image = to_float_tensor(read_image(path), self.img_ch)
        image = self.random_transform(image) if self.augment else resize_square(image, self.img_size)
        return {'image': image.mul_(2.0).sub_(1.0), 'path': path}

    def lose_resolution(self, image):
        """Shrink a CxHxW image to a random side of ``degrade_range`` (scaled from 256 px to its own
        height) and enlarge it back to its size."""
        low, high = self.degrade_range
        side = int(torch.randint(low, high + 1, ())) * image.shape[1] / 256
        height, width = image.shape[1:]
        small = [max(1, round(side)), max(1, round(side * width / height))]
        shrunk = F.resize(image, small, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        return F.resize(shrunk, [height, width], interpolation=F.InterpolationMode.BILINEAR, antialias=True)

    def random_transform(self, image, extra=None):
        """Random flips (and quarter turns with ``rot90``), resize + random crop, brightness/contrast
        jitter; CxHxW in [0, 1] in and out.

        ``extra`` (K x H x W, e.g. a mask and its weights) goes through the same flips, resize and crop
        but no jitter; with it, returns (image, extra).
        """
        channels = image.shape[0]
        if extra is not None:
            image = torch.cat([image, extra], 0)
        if torch.rand(()) < 0.5:
            image = F.hflip(image)
        if torch.rand(()) < 0.5:
            image = F.vflip(image)
        if self.rot90:
            image = torch.rot90(image, int(torch.randint(0, 4, ())), (1, 2))
        if self.degrade and torch.rand(()) < self.degrade:
            image[:channels] = self.lose_resolution(image[:channels])
        image = resize_square(image, self.load_size)
        margin = self.load_size - self.img_size
        top, left = torch.randint(0, margin + 1, (2,)).tolist()
        image = F.crop(image, top, left, self.img_size, self.img_size)
        image, extra = image[:channels], image[channels:]
        brightness, contrast = (1.0 + self.jitter * (2.0 * torch.rand(2) - 1.0)).tolist()
        image = F.adjust_brightness(image, brightness)
        # adjust_* clamp to [0, 1], so the output range holds after jitter.
        image = F.adjust_contrast(image, contrast)
        return image if extra.shape[0] == 0 else (image, extra)
