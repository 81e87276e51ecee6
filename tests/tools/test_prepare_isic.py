"""Tests for tools/prepare_isic.py on tiny synthetic dermoscopy-like images and masks."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data.layout import check_split, check_training_layout
from tools import prepare_isic
from tools.prepare_common import PrepareError
from conftest import file_hashes, help_text

H, W, SIZE = 72, 96, 40
IDS = [f'ISIC_{i:07d}' for i in range(9)]
FLAGS = ['--size', str(SIZE), '--n_val', '1', '--n_testA', '1', '--n_testB', '2', '--n_a', '2', '--n_b', '10']


def _pair(seed, vignette):
    """(RGB image, bool mask): noisy skin, a dark elliptical lesion, optionally black vignette corners."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:H, :W]
    cy, cx = rng.uniform(0.35, 0.65) * H, rng.uniform(0.3, 0.7) * W
    mask = ((yy - cy) / 13) ** 2 + ((xx - cx) / 17) ** 2 <= 1
    image = np.array([205, 160, 140]) + rng.normal(0, 4, (H, W, 3))
    image[mask] = [100, 60, 50]
    if vignette:
        image[np.hypot((yy - H / 2) / H, (xx - W / 2) / W) > 0.55] = 10
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture(scope='module')
def src(tmp_path_factory):
    """(images dir, masks dir) with 9 pairs; one mask uses the ISIC 2016 '_Segmentation' spelling."""
    root = tmp_path_factory.mktemp('isic_src')
    images, masks = root / 'images', root / 'masks'
    images.mkdir()
    masks.mkdir()
    for i, image_id in enumerate(IDS):
        image, mask = _pair(i, vignette=i % 3 == 0)
        Image.fromarray(image).save(images / f'{image_id}.jpg', quality=95)
        suffix = '_Segmentation' if i == 4 else '_segmentation'
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(masks / f'{image_id}{suffix}.png')
    Image.fromarray(np.zeros((H, W), np.uint8)).save(images / 'ISIC_0000000_superpixels.png')
    return images, masks


def _run(images, masks, out, *extra):
    args = prepare_isic.build_parser().parse_args(['--images', str(images), '--masks', str(masks),
                                                   '--out', str(out), *FLAGS, *extra])
    return prepare_isic.run(args)


@pytest.fixture(scope='module')
def built(src, tmp_path_factory):
    """(dataroot, folder dir, summary line) of one run on ``src``."""
    out = tmp_path_factory.mktemp('isic_out')
    summary = _run(*src, out)
    return out, out / 'ISIC' / 'isic_1', summary


def test_layout_and_no_image_in_two_roles(built):
    out, folder, summary = built
    dir_a, dir_b = check_training_layout(out, 'ISIC', 'isic_1')
    assert os.path.basename(dir_a) == '2_A_weak'
    assert len(check_split(folder, 'val')) == 1 and len(check_split(folder, 'testA')) == 1
    assert len(check_split(folder, 'testB')) == 2
    splits = json.loads((folder / 'splits.json').read_text())
    used = splits['train'] + splits['val'] + splits['test']
    assert len(used) == len(set(used)) and set(used) <= set(IDS)
    roles = {'val': 'val', 'testA': 'test', 'testB': 'test',
             os.path.basename(dir_a): 'train', os.path.basename(dir_b): 'train'}
    for out_folder, names in splits['files'].items():
        assert sorted(names) == sorted(os.listdir(folder / out_folder / ('images' if out_folder in ('val', 'testA')
                                                                          else '')))
        for name in names:
            assert name[:12] in splits[roles[out_folder]], (out_folder, name)
    n_b = len(os.listdir(dir_b))
    assert len(splits['train']) == 2 + n_b and n_b >= 1
    assert summary.endswith(f'-> {folder}') and '2 A_weak' in summary


def test_both_mask_spellings_and_superpixels(src):
    found = prepare_isic.find_pairs(*map(str, src), prepare_isic.SKIPPED_SUFFIXES)
    pairs = {image_id: mask for image_id, _, mask in found}
    assert sorted(pairs) == IDS  # the ISIC 2017 '_superpixels' PNG is not an image
    assert pairs['ISIC_0000004'].endswith('ISIC_0000004_Segmentation.png')


def test_images_and_masks_format(built):
    _, folder, _ = built
    for split in ('val', 'testA'):
        for image_path, label_path in check_split(folder, split):
            label = Image.open(label_path)
            assert label.mode == 'L' and label.size == (SIZE, SIZE)
            assert set(np.unique(np.asarray(label))) == {0, 255}
            assert Image.open(image_path).size == (SIZE, SIZE)
    for image_path, _ in check_split(folder, 'testB'):
        assert Image.open(image_path).size == (SIZE, SIZE) and image_path.endswith('_health.png')


def test_healthy_patches_avoid_lesion_and_dark_corners(src, built):
    images, masks = src
    _, folder, _ = built
    splits = json.loads((folder / 'splits.json').read_text())
    assert len(splits['patches']) == 2 + len(splits['files'][next(n for n in splits['files'] if n.endswith('_B_weak'))])
    scale = min(H, W) / 256  # original pixels per working pixel
    for name, (x0, y0, x1, y1) in splits['patches'].items():
        image_id = name[:-len('_health.png')]
        mask_path = next(p for p in os.listdir(masks) if p.startswith(image_id))
        mask = np.asarray(Image.open(masks / mask_path)) > 0
        near = ndimage.binary_dilation(mask, iterations=int(14 * scale))
        assert x1 - x0 == y1 - y0 >= int(72 * scale) and 0 < x0 and 0 < y0 and x1 < W and y1 < H
        assert not near[y0:y1, x0:x1].any(), name
        gray = np.asarray(Image.open(images / f'{image_id}.jpg').convert('L'), np.float32)
        assert gray[y0:y1, x0:x1].min() > 0.6 * np.median(gray[~near]), name


def test_same_seed_same_bytes_and_overwrite(src, built, tmp_path):
    _, folder, _ = built
    _run(*src, tmp_path)
    assert file_hashes(tmp_path / 'ISIC' / 'isic_1') == file_hashes(folder)
    with pytest.raises(PrepareError, match='--overwrite'):
        _run(*src, tmp_path)
    _run(*src, tmp_path, '--overwrite', '--seed', '3')
    assert sorted(os.listdir(tmp_path / 'ISIC')) == ['isic_1']


def test_interrupted_run_leaves_nothing(src, tmp_path, monkeypatch):
    def interrupt(image, mask):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare_isic, 'find_healthy_patch', interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(*src, tmp_path)
    assert os.listdir(tmp_path / 'ISIC') == []


def _broken(tmp_path, src, kind):
    """(images dir, masks dir, path the error must name) with one problem of ``kind``."""
    images, masks = tmp_path / 'images', tmp_path / 'masks'
    if kind == 'missing images':
        return images, src[1], images
    images.mkdir()
    masks.mkdir()
    if kind == 'no images':
        return images, masks, images
    for image_id in IDS[:4]:  # all spelled _segmentation
        for folder in ('images', 'masks'):
            name = f'{image_id}.jpg' if folder == 'images' else f'{image_id}_segmentation.png'
            (tmp_path / folder / name).write_bytes((src[0 if folder == 'images' else 1] / name).read_bytes())
    bad_image, bad_mask = images / f'{IDS[0]}.jpg', masks / f'{IDS[0]}_segmentation.png'
    if kind == 'no masks':
        for name in os.listdir(masks):
            os.remove(masks / name)
        return images, masks, masks
    if kind == 'image without mask':
        os.remove(bad_mask)
        return images, masks, bad_image
    if kind == 'size mismatch':
        Image.fromarray(np.zeros((H // 2, W), np.uint8)).save(bad_mask)
        return images, masks, bad_mask
    if kind == 'duplicate id':
        Image.open(bad_image).save(images / f'{IDS[0]}.png')
        return images, masks, images / f'{IDS[0]}.png'
    bad_image.write_bytes(bad_image.read_bytes()[:200])  # 'unreadable': a truncated download
    return images, masks, bad_image


@pytest.mark.parametrize('kind', ['missing images', 'no images', 'no masks', 'image without mask', 'size mismatch',
                                  'unreadable', 'duplicate id'])
def test_errors_are_one_line_naming_the_path(src, tmp_path, kind):
    images, masks, path = _broken(tmp_path, src, kind)
    argv = ['--images', str(images), '--masks', str(masks), '--out', str(tmp_path / 'out'), *FLAGS,
            '--n_a', '10']  # ask for more than there is, so every image is read
    with pytest.raises(SystemExit) as exc:
        prepare_isic.main(argv)
    message = str(exc.value.code)
    assert message.startswith('error: ') and '\n' not in message and str(path) in message
    if kind == 'no masks':
        assert '_Segmentation.png' in message
    assert not (tmp_path / 'out' / 'ISIC').exists() or os.listdir(tmp_path / 'out' / 'ISIC') == []


def test_help_explains_every_flag(capsys):
    text = help_text(capsys, prepare_isic.main)
    for flag in ('--images', '--masks', '--out', '--folder', '--size', '--seed', '--overwrite', '--n_val',
                 '--n_testA', '--n_testB', '--n_a', '--n_b'):
        assert flag in text
