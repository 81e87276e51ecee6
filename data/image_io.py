"""Reading and writing images and masks.

Every image comes back as uint8 RGB (HxWx3) whatever its file mode, every mask as a bool HxW array,
and every write is atomic (temp file in the same folder, then ``os.replace``) so an interrupted run
never leaves a half-written file behind.
"""
import json
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from util.atomic import atomic_write

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

# Errors PIL raises on corrupt, truncated or non-image files.
PIL_READ_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


class ImageReadError(ValueError):
    """A file that should be an image cannot be decoded.

    ``path`` and ``reason`` are kept as attributes; the message is one line naming the file and
    saying what to do.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f'cannot read image {self.path}: {self.reason} '
                         f'(replace or remove this file, then run again)')

    def __reduce__(self):
        # Rebuild from (path, reason), not from the message, when sent between processes.
        return type(self), (self.path, self.reason)


def is_image_file(path):
    """True when ``path`` has an image extension (case-insensitive) and is not a hidden file."""
    name = os.path.basename(str(path))
    return not name.startswith('.') and name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder):
    """Sorted full paths of the image files directly inside ``folder`` (no recursion, no hidden files)."""
    folder = str(folder)
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if is_image_file(name) and os.path.isfile(os.path.join(folder, name)))


def _open_decoded(path):
    """Open ``path`` with PIL and decode all pixels, so truncated files fail here and not later."""
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise ImageReadError(path, 'file not found') from None
    except PIL_READ_ERRORS as err:
        raise ImageReadError(path, f'not a readable image ({type(err).__name__}: {err})') from None


def _high_depth_to_uint8(img):
    """Scale a 16/32-bit integer or float single-channel image to 0..255 by its own maximum.

    High-bit-depth medical slices rarely use the full 16-bit range, so scaling by the image maximum
    (not by 65535) keeps them visible; negative values are clipped to 0, and NaN/inf pixels (a float
    image) read as 0, else one of them would scale every other pixel to 0 or NaN.
    """
    values = np.asarray(img, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0).clip(min=0)
    peak = values.max()
    if peak > 0:
        values = values * (255.0 / peak)
    return np.rint(values).astype(np.uint8)


def non_finite_pixels(path):
    """How many pixels of image ``path`` are NaN or inf (only a float image can hold them; others are not
    decoded); ImageReadError when it cannot be read."""
    with Image.open(path) as img:
        if not img.mode.startswith('F'):
            return 0
    return int((~np.isfinite(np.asarray(_open_decoded(path), dtype=np.float32))).sum())


def read_image(path):
    """Read any supported image file as an HxWx3 uint8 RGB array.

    Gray, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. Raises
    ``ImageReadError`` for a missing, truncated, corrupt or non-image file.
    """
    img = _open_decoded(path)
    try:
        if img.mode.startswith(('I', 'F')):
            gray = _high_depth_to_uint8(img)
            return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
        if img.mode != 'RGB':
            img = img.convert('RGB')
    except PIL_READ_ERRORS as err:
        raise ImageReadError(path, f'cannot convert mode {img.mode} to RGB ({err})') from None
    return np.asarray(img, dtype=np.uint8).copy()


def read_mask(path):
    """Read a lesion mask as an HxW bool array: any non-zero pixel (any channel, alpha ignored) is lesion."""
    img = _open_decoded(path)
    if img.mode == 'P':
        # Palette indices are not intensities: compare the colours the indices stand for.
        img = img.convert('RGB')
    values = np.asarray(img)
    if values.ndim == 3:
        if img.mode in ('LA', 'RGBA', 'PA', 'La', 'RGBa'):
            values = values[:, :, :-1]
        return values.any(axis=2)
    return values != 0


def write_png_atomic(path, array):
    """Write ``array`` as a PNG: uint8 HxW (gray), uint8 HxWx3 (RGB) or uint16 HxW (16-bit gray)."""
    array = np.asarray(array)
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        img = Image.fromarray(np.ascontiguousarray(array))
    elif array.dtype == np.uint16 and array.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(array))
    else:
        raise TypeError(f'write_png_atomic expects uint8 HxW/HxWx3 or uint16 HxW, '
                        f'got {array.dtype} with shape {array.shape} for {path}')
    atomic_write(path, lambda f: img.save(f, format='PNG'), mode='wb')


def write_text_atomic(path, text):
    """Write the string ``text`` to ``path`` (UTF-8) atomically."""
    atomic_write(path, lambda f: f.write(text), encoding='utf-8')


def write_json_atomic(path, obj):
    """Write ``obj`` as JSON (indent 2, trailing newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + '\n')

def resize_mask(mask, size):
    """Bool mask -> bool mask at ``size`` (H, W): bilinear on 0/255, cut at the middle, so an enlarged
    mask gets smooth edges instead of nearest-neighbour blocks."""
    grey = Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(tuple(size)[::-1], Image.BILINEAR)
    return np.asarray(grey) >= 128
