"""Reading a user's NIfTI volume in BraTS's voxel orientation, and writing a mask back in its own grid.

An axial volume stored in another voxel order (RAS, LAS, slices top-down...) is flipped and its in-plane
axes swapped into BraTS's (data/brats.py ORIENTATION) without resampling, so its slices look as the
training slices did; the mask is turned back before it is written with the input's affine and header.
"""
import gzip

import nibabel as nib
import numpy as np
from nibabel import orientations

from data.brats import NIFTI_ERRORS, ORIENTATION
from util.atomic import atomic_write

AXIAL = ('S', 'I')
PLANE_NAMES = {'L': 'sagittal', 'R': 'sagittal', 'A': 'coronal', 'P': 'coronal'}


class VolumeError(ValueError):
    """A file that is not a volume predict.py can take; the message is one line naming it and the fix."""


def open_volume(path):
    """The nibabel image of ``path`` (header only; the voxels stay on disk), checked to be one 3-D axial
    volume; VolumeError otherwise."""
    try:
        image = nib.load(path)
    except NIFTI_ERRORS as error:
        raise VolumeError(f'cannot read NIfTI {path} ({type(error).__name__}: {error}); replace or remove this '
                          f'file, then run again') from None
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeError(f'{path}: expected a 3-D volume of one MRI sequence (as <ID>_flair.nii.gz), got shape '
                          f'{image.shape}; save its FLAIR volume alone (e.g. nibabel: image.slicer[..., 0]), then '
                          f'pass that')
    codes = orientations.aff2axcodes(image.affine)
    if codes[2] not in AXIAL:
        raise VolumeError(f'{path}: expected axial slices along the third voxel axis (as BraTS: '
                          f'{",".join(ORIENTATION)}), but its voxel axes run {",".join(codes)}, so its slices are '
                          f'{PLANE_NAMES[codes[2]]}; reorient it (e.g. fslreorient2std), then pass that')
    return image


def _to_brats(image):
    """The orientation transform from ``image``'s voxel order to BraTS's."""
    return orientations.ornt_transform(orientations.io_orientation(image.affine),
                                       orientations.axcodes2ornt(ORIENTATION))


def read_volume(image):
    """(voxels, non_finite): the voxels of a checked ``open_volume`` image as float32 X x Y x Z in BraTS's
    voxel orientation, NaN and inf read as 0 (the background: one NaN would otherwise turn the whole
    volume's scaling to NaN), and how many there were; VolumeError when the data cannot be read."""
    try:
        voxels = np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3])
    except NIFTI_ERRORS as error:
        raise VolumeError(f'cannot read NIfTI {image.get_filename()} ({type(error).__name__}: {error}); replace '
                          f'or remove this file, then run again') from None
    bad = ~np.isfinite(voxels)
    non_finite = int(bad.sum())
    if non_finite:
        voxels = np.where(bad, np.float32(0), voxels)
    return orientations.apply_orientation(voxels, _to_brats(image)), non_finite


def to_input_grid(array, image):
    """An X x Y x Z array in BraTS's orientation turned back into ``image``'s voxel grid."""
    return orientations.apply_orientation(array, orientations.ornt_transform(
        orientations.axcodes2ornt(ORIENTATION), orientations.io_orientation(image.affine)))


def voxel_ml(image):
    """The volume of one voxel of ``image`` in millilitres (its zooms are in mm)."""
    return float(np.prod(image.header.get_zooms()[:3])) / 1000


def write_volume(path, array, like):
    """Write ``array`` (uint8 mask or float32 map, in ``like``'s voxel grid) as gzipped NIfTI with
    ``like``'s shape, affine and header, atomically."""
    header = like.header.copy()
    header.set_data_dtype(array.dtype)
    image = type(like)(array.reshape(like.shape), like.affine, header)
    image.header.set_slope_inter(1, 0)  # the values are the mask itself, whatever the input's scaling
    image.header['cal_min'], image.header['cal_max'] = 0, 1
    data = gzip.compress(image.to_bytes(), mtime=0)
    atomic_write(path, lambda handle: handle.write(data), mode='wb')
