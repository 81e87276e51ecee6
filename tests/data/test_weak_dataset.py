"""Tests for data/weak_dataset.py: output shape/range/dtype, augmentation determinism, grayscale."""
import numpy as np
import pytest
import torch
from PIL import Image

from data import create_dataset
from data.weak_dataset import WeakImageDataset, default_load_size


@pytest.fixture
def image_paths(tmp_path):
    """Three small RGB images of different sizes, with structure so flips and crops show."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 48), (32, 32), (50, 36)]):
        path = tmp_path / f'img{i}.png'
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize('augment', [False, True])
@pytest.mark.parametrize('img_ch', [1, 3])
def test_item_shape_range_dtype(image_paths, augment, img_ch):
    dataset = WeakImageDataset(image_paths, img_size=24, img_ch=img_ch, augment=augment)
    assert len(dataset) == 3
    for index in range(3):
        item = dataset[index]
        image = item['image']
        assert image.dtype == torch.float32 and image.shape == (img_ch, 24, 24)
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert item['path'] == image_paths[index]


def test_plain_resize_matches_extremes(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'black.png')
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / 'white.png')
    dataset = WeakImageDataset([tmp_path / 'black.png', tmp_path / 'white.png'], img_size=8)
    assert torch.all(dataset[0]['image'] == -1.0) and torch.all(dataset[1]['image'] == 1.0)


def test_augment_is_deterministic_under_seed(image_paths):
    dataset = WeakImageDataset(image_paths, img_size=24, augment=True)
    torch.manual_seed(3)
    first = [dataset[i]['image'] for i in range(3)]
    torch.manual_seed(3)
    second = [dataset[i]['image'] for i in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    torch.manual_seed(4)
    assert any(not torch.equal(a, dataset[i]['image']) for i, a in enumerate(first))


def test_augment_varies_between_draws(image_paths):
    dataset = WeakImageDataset(image_paths[:1], img_size=24, augment=True)
    torch.manual_seed(0)
    draws = [dataset[0]['image'] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_no_augment_is_reproducible_without_seed(image_paths):
    dataset = WeakImageDataset(image_paths, img_size=24)
    assert torch.equal(dataset[1]['image'], dataset[1]['image'])


def test_default_load_size_and_validation(image_paths):
    assert default_load_size(256) == 306 and default_load_size(64) == 76
    with pytest.raises(ValueError, match='img_ch'):
        WeakImageDataset(image_paths, img_size=8, img_ch=2)
    with pytest.raises(ValueError, match='at least one'):
        WeakImageDataset([], img_size=8)
    with pytest.raises(ValueError, match='load_size'):
        WeakImageDataset(image_paths, img_size=8, load_size=4)


def test_registry(image_paths):
    dataset = create_dataset('weak', paths=image_paths, img_size=16)
    assert isinstance(dataset, WeakImageDataset)
    with pytest.raises(ValueError, match='labeled, weak'):
        create_dataset('nope')


@pytest.mark.parametrize('rot90', [False, True])
def test_rot90_adds_the_quarter_turns_to_the_flips(tmp_path, rot90):
    # A square image with one bright corner pixel and one half-bright edge pixel: each of the 8
    # symmetries of the square puts them in a distinct pair of places; flips alone reach 4 of them.
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[0, 0], pixels[0, 3] = 255, 128
    Image.fromarray(pixels).save(tmp_path / 'marks.png')
    dataset = WeakImageDataset([tmp_path / 'marks.png'], img_size=8, augment=True, load_size=8, jitter=0.0,
                               rot90=rot90)
    torch.manual_seed(0)
    layouts = {tuple(torch.nonzero(dataset[0]['image'][0] > -1).flatten().tolist()) for _ in range(200)}
    assert len(layouts) == (8 if rot90 else 4)


def mean_abs_laplacian(image):
    """Sharpness of a CxHxW image: the mean absolute 4-neighbour Laplacian of its first channel."""
    grey = image[0]
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.abs().mean())


def test_degrade_takes_away_sharpness(tmp_path):
    """--degrade_A: a lesion image shrunk to 72-144 px of 256 and enlarged back is as smooth as the
    normal patches that were made that way, while the flips, crop and jitter still apply."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / 'noise.png')
    sharp = WeakImageDataset([tmp_path / 'noise.png'], img_size=128, augment=True, jitter=0)
    smooth = WeakImageDataset([tmp_path / 'noise.png'], img_size=128, augment=True, jitter=0, degrade=1.0)
    torch.manual_seed(0)
    sharp_values = [mean_abs_laplacian(sharp[0]['image']) for _ in range(4)]
    smooth_values = [mean_abs_laplacian(smooth[0]['image']) for _ in range(4)]
    assert max(smooth_values) < 0.5 * min(sharp_values)
    never = WeakImageDataset([tmp_path / 'noise.png'], img_size=128, augment=True, jitter=0, degrade=0.0)
    torch.manual_seed(5)
    first = sharp[0]['image']
    torch.manual_seed(5)
    assert torch.equal(first, never[0]['image'])


def test_degrade_range_is_relative_to_256(tmp_path):
    """The shrink's side is given for a 256-px image and scaled to the image's own height."""
    dataset = WeakImageDataset([tmp_path / 'unused.png'], img_size=8, degrade=1.0, degrade_range=(16, 16))
    image = torch.rand(3, 64, 96)
    out = dataset.lose_resolution(image)
    assert out.shape == image.shape
    expected = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(image[None], size=(4, 6), mode='bilinear', antialias=True,
                                        align_corners=False),
        size=(64, 96), mode='bilinear', antialias=False, align_corners=False)[0]
    assert torch.allclose(out, expected, atol=1e-5)
