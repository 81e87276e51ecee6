"""predict.py's check of each input against what the weights file's training data looked like.

The file's ``options['dataset']`` says what the network saw: BraTS weights saw skull-stripped FLAIR slices
(grey, background exactly 0, each volume's brain scaled so its 99.5th percentile is 255), ISIC weights saw
colour dermoscopy photographs. The bounds below were measured on their training folders (500_A_weak and
500_B_weak, 1000 images each) with margin: an input outside them gets a warning (predictions.csv's
``input_check`` column), and a colour image given to MRI weights is refused outright: nothing in it can be
a FLAIR slice (the released BraTS.pt once found a "lesion" with score 0.97 in a dermoscopy photograph).
Weights of any other dataset (your own, the demo) are not checked: their training data is not known here.
"""
import numpy as np

PROFILES = {'BraTS': 'mri', 'ISIC': 'photo'}
GREY_MAX_CHANNEL_DIFF = 1.0  # mean |R-G| + |G-B| in grey levels: BraTS slices 0, ISIC photographs >= 2.1
MRI_MIN_ZERO_FRAC = 0.3  # pixels exactly 0: BraTS training slices >= 0.71, BraTS volumes about 0.83
MRI_MIN_P995 = 48  # 99.5th percentile of a BraTS training slice: >= 99
MRI_MIN_LEVELS = 16  # distinct brain intensities of a BraTS FLAIR volume: > 400
LEVEL_SAMPLE = 2 ** 20  # brain voxels sampled to count distinct intensities
PHOTO_MAX_BLACK_FRAC = 0.3  # pure black pixels of an ISIC training photograph: <= 0.15
PHOTO_MIN_RANGE = 8  # grey levels between the 0.5th and 99.5th percentiles of an ISIC photograph: >= 9
SKULL_STRIP = ('skull-strip it (e.g. HD-BET, FSL BET or SynthStrip) and set everything outside the brain to 0, '
               'as BraTS volumes are')


def profile(state):
    """'mri', 'photo' or None (not checked) for a weights file's stored training dataset."""
    return PROFILES.get((state.get('options') or {}).get('dataset'))


def _percent(fraction):
    return f'{100 * fraction:.0f} %'


def channel_difference(raw):
    """Mean |R-G| + |G-B| of a uint8 H x W x 3 image, in grey levels (0 for a grey image)."""
    rgb = raw.astype(np.int16)
    return float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean())


def _mri_image(raw):
    """[warnings] of a grey image given to weights trained on FLAIR slices."""
    warnings = []
    zero = float((raw.max(axis=2) == 0).mean())
    if zero < MRI_MIN_ZERO_FRAC:
        warnings.append(f'background not zero: {_percent(zero)} of the pixels are 0 (training slices: 71 % or more); '
                        f'{SKULL_STRIP}')
    top = float(np.percentile(raw, 99.5))
    if top < MRI_MIN_P995:
        warnings.append(f'dark: its 99.5th percentile is {top:.0f} of 255 (training slices: 99 or more, the brain '
                        f'scaled to 0-255)')
    return warnings


def _photo_image(raw, colour):
    """[warnings] of an image given to weights trained on colour photographs."""
    warnings = []
    if colour <= GREY_MAX_CHANNEL_DIFF:
        warnings.append('grey image; the weights were trained on colour dermoscopy photographs')
    black = float((raw.max(axis=2) == 0).mean())
    if black > PHOTO_MAX_BLACK_FRAC:
        warnings.append(f'{_percent(black)} of the pixels are black (training photographs: 15 % at most)')
    grey = raw.mean(axis=2)
    span = float(np.percentile(grey, 99.5) - np.percentile(grey, 0.5))
    if span < PHOTO_MIN_RANGE:
        warnings.append(f'nearly uniform: its grey levels span {span:.0f} (training photographs: 9 or more)')
    return warnings


def check_image(raw, kind, allow_other):
    """(refusal or None, [warnings]) for a uint8 H x W x 3 image given to weights of profile ``kind``; a
    refusal becomes a warning with ``allow_other`` (--allow_other_dataset)."""
    if kind is None:
        return None, []
    colour = channel_difference(raw)
    if kind == 'photo':
        return None, _photo_image(raw, colour)
    if colour <= GREY_MAX_CHANNEL_DIFF:
        return None, _mri_image(raw)
    mismatch = (f'colour image (its channels differ by {colour:.1f} grey levels on average); the weights were '
                f'trained on grey FLAIR MRI slices')
    if allow_other:
        return None, [mismatch]
    return f'{mismatch}: pass grey slices or volumes, or --allow_other_dataset True', []


def check_volume(voxels, kind):
    """[warnings] for a float volume (non-finite voxels already 0) given to weights of profile ``kind``."""
    if kind != 'mri':
        return []
    warnings = []
    zero = float((voxels == 0).mean())
    if zero < MRI_MIN_ZERO_FRAC:
        warnings.append(f'background not zero: {_percent(zero)} of the voxels are 0 (skull-stripped BraTS volumes: '
                        f'about 83 %); {SKULL_STRIP}')
    brain = voxels[voxels != 0]
    levels = len(np.unique(brain[::max(1, brain.size // LEVEL_SAMPLE)]))  # a sample: np.unique sorts
    if 0 < levels < MRI_MIN_LEVELS:
        warnings.append(f'only {levels} distinct intensities in the brain: a mask or label map, not a FLAIR volume?')
    return warnings


def non_finite_warnings(count, what):
    """[the warning] for ``count`` NaN/inf ``what`` ('pixels', 'voxels') read as 0, or [] when there are none."""
    return [f'{count} non-finite {what} (NaN/inf) read as 0, the background'] if count else []
