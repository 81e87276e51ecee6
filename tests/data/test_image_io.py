"""Tests for data/image_io.py: mode conversions, read errors, atomic writes."""
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from data.image_io import (ImageReadError, is_image_file, list_images, non_finite_pixels, read_image, read_mask,
                           write_json_atomic, write_png_atomic, write_text_atomic)


def _gradient(h=8, w=12):
    """A small uint8 HxW ramp, so conversions are checked on more than one value."""
    return (np.arange(h * w).reshape(h, w) * 2).astype(np.uint8)


@pytest.mark.parametrize('mode', ['L', 'RGB', 'RGBA', 'P', 'LA', '1', 'CMYK', 'I;16', 'I', 'F'])
def test_read_image_any_mode_gives_uint8_rgb(tmp_path, mode):
    gray = _gradient()
    img = Image.fromarray(gray).convert(mode) if mode not in ('I;16', 'I', 'F') else \
        Image.fromarray(gray.astype({'I;16': np.uint16, 'I': np.int32, 'F': np.float32}[mode]) * 100)
    # PNG cannot hold 32-bit I/F or CMYK; TIFF can.
    path = tmp_path / ('x.tif' if mode in ('I', 'F', 'CMYK') else 'x.png')
    img.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    if mode in ('L', 'RGB', 'RGBA', 'LA', 'P'):
        np.testing.assert_array_equal(out[:, :, 0], gray)
    if mode in ('I;16', 'I', 'F'):
        # High-depth images are scaled by their maximum onto 0..255.
        assert out.max() == 255 and out.min() == 0
        assert np.all(np.diff(out[:, :, 0].ravel().astype(int)) >= 0)


def test_nan_and_inf_pixels_of_a_float_image_read_as_0_and_are_counted(tmp_path):
    values = _gradient().astype(np.float32) + 1
    Image.fromarray(values).save(tmp_path / 'clean.tif')
    values[0, :3] = [np.nan, np.inf, -np.inf]
    Image.fromarray(values).save(tmp_path / 'broken.tif')
    expected = read_image(tmp_path / 'clean.tif')
    expected[0, :3] = 0
    np.testing.assert_array_equal(read_image(tmp_path / 'broken.tif'), expected)
    assert expected.max() == 255  # one inf no longer scales every other pixel to 0
    assert non_finite_pixels(tmp_path / 'broken.tif') == 3 and non_finite_pixels(tmp_path / 'clean.tif') == 0
    Image.fromarray(_gradient()).save(tmp_path / 'grey.png')
    assert non_finite_pixels(tmp_path / 'grey.png') == 0


def test_read_image_jpeg_and_bmp(tmp_path):
    rgb = np.full((6, 5, 3), 120, np.uint8)
    for name in ('a.JPG', 'b.bmp'):
        Image.fromarray(rgb).save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.shape == (6, 5, 3) and abs(int(out.mean()) - 120) <= 2


@pytest.mark.parametrize('content', [b'', b'not an image at all', 'truncated'])
def test_read_image_bad_file_names_the_file(tmp_path, content):
    path = tmp_path / 'broken.png'
    if content == 'truncated':
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and '\n' not in message and 'replace or remove' in message
    assert isinstance(info.value, ValueError) and info.value.path == str(path)
    copy = pickle.loads(pickle.dumps(info.value))  # DataLoader workers send errors across processes
    assert str(copy) == message and copy.reason == info.value.reason


def test_read_image_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match='not found'):
        read_image(tmp_path / 'nope.png')


def test_read_mask_modes(tmp_path):
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / 'l.png')  # 0/1 values
    Image.fromarray((mask * 65535).astype(np.uint16)).save(tmp_path / 'i16.png')
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[mask, 2] = 200  # lesion only in the blue channel
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    rgba = np.dstack([rgb, np.full((6, 7), 255, np.uint8)])  # opaque alpha must not count
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    Image.fromarray(rgb).convert('P').save(tmp_path / 'p.png')
    for name in ('l.png', 'i16.png', 'rgb.png', 'rgba.png', 'p.png'):
        out = read_mask(tmp_path / name)
        assert out.dtype == np.bool_ and out.shape == (6, 7), name
        np.testing.assert_array_equal(out, mask, err_msg=name)


def test_list_images_filters_and_sorts(tmp_path):
    for name in ('b.PNG', 'a.jpeg', 'c.tiff', '.hidden.png', 'notes.txt', 'd.Bmp'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'sub.png').mkdir()
    names = [os.path.basename(p) for p in list_images(tmp_path)]
    assert names == ['a.jpeg', 'b.PNG', 'c.tiff', 'd.Bmp']
    assert not is_image_file('.x.png') and is_image_file('X.TIF')


def _only_files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_png_atomic_roundtrip_and_no_temp(tmp_path):
    gray = _gradient()
    rgb = np.dstack([gray, gray[::-1], gray])
    deep = (gray.astype(np.uint16) * 257)
    write_png_atomic(tmp_path / 'new' / 'dir' / 'g.png', gray)
    write_png_atomic(tmp_path / 'new' / 'dir' / 'c.png', rgb)
    write_png_atomic(tmp_path / 'new' / 'dir' / 'd.png', deep)
    write_png_atomic(tmp_path / 'new' / 'dir' / 'g.png', gray[::-1])  # overwrite
    out = tmp_path / 'new' / 'dir'
    assert _only_files(out) == ['c.png', 'd.png', 'g.png']
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'g.png')), gray[::-1])
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'c.png')), rgb)
    with Image.open(out / 'd.png') as img:
        assert img.mode == 'I;16'
        np.testing.assert_array_equal(np.asarray(img), deep)


def test_write_png_atomic_rejects_bad_array_and_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match='uint8'):
        write_png_atomic(tmp_path / 'f.png', np.zeros((4, 4), np.float32))
    assert _only_files(tmp_path) == []


def test_failed_write_removes_temp_and_keeps_old_file(tmp_path):
    path = tmp_path / 'obj.json'
    write_json_atomic(path, {'a': 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {'a': object()})
    assert _only_files(tmp_path) == ['obj.json']
    assert json.loads(path.read_text()) == {'a': 1}


def test_write_text_and_json(tmp_path):
    write_text_atomic(tmp_path / 't' / 'opt.txt', 'lr: 0.1\n')
    write_json_atomic(tmp_path / 's.json', {'JA': 0.5, 'names': ['x']})
    assert (tmp_path / 't' / 'opt.txt').read_text() == 'lr: 0.1\n'
    assert (tmp_path / 's.json').read_text() == json.dumps({'JA': 0.5, 'names': ['x']}, indent=2) + '\n'
    assert _only_files(tmp_path) == ['s.json', 't']
