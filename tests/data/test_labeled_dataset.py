"""Tests for data/labeled_dataset.py: resized input, original-size mask and raw image, collation."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data import create_dataset
from data.labeled_dataset import LabeledDataset, collate_labeled


@pytest.fixture
def pairs(tmp_path):
    """Two labelled images of different sizes and one unlabelled (testB-like) image."""
    rng = np.random.default_rng(1)
    result = []
    for name, (h, w) in (('a', (20, 30)), ('b', (16, 16))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f'{name}.png')
        mask = np.zeros((h, w), np.uint8)
        mask[2:6, 3:9] = 255
        Image.fromarray(mask).save(tmp_path / f'{name}_segmentation.png')
        result.append((str(tmp_path / f'{name}.png'), str(tmp_path / f'{name}_segmentation.png')))
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(tmp_path / 'c.png')  # gray file
    result.append((str(tmp_path / 'c.png'), None))
    return result


def test_item_fields(pairs):
    dataset = LabeledDataset(pairs, img_size=8)
    item = dataset[0]
    assert item['image'].shape == (3, 8, 8) and item['image'].dtype == torch.float32
    assert item['image'].min() >= -1.0 and item['image'].max() <= 1.0
    assert item['mask'].dtype == torch.bool and item['mask'].shape == (20, 30)
    assert item['mask'].sum() == 24 and item['mask'][2, 3] and not item['mask'][0, 0]
    assert item['name'] == 'a' and item['path'] == pairs[0][0] and item['orig_size'] == (20, 30)
    assert item['raw'].dtype == torch.uint8 and item['raw'].shape == (20, 30, 3)
    np.testing.assert_array_equal(item['raw'].numpy(), np.asarray(Image.open(pairs[0][0])))


def test_unlabelled_and_grayscale(pairs):
    item = LabeledDataset(pairs, img_size=8, img_ch=1)[2]
    assert item['image'].shape == (1, 8, 8)
    assert item['mask'].dtype == torch.bool and item['mask'].numel() == 0
    assert item['raw'].shape == (12, 10, 3) and item['orig_size'] == (12, 10)


def test_mask_size_mismatch_raises(pairs, tmp_path):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / 'small.png')
    with pytest.raises(ValueError, match='small.png'):
        LabeledDataset([(pairs[0][0], str(tmp_path / 'small.png'))], img_size=8)[0]


def test_collate_through_dataloader(pairs):
    dataset = create_dataset('labeled', pairs=pairs, img_size=8)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_labeled)))
    assert batch['image'].shape == (3, 3, 8, 8)
    assert batch['name'] == ['a', 'b', 'c']
    assert [tuple(m.shape) for m in batch['mask']] == [(20, 30), (16, 16), (0, 0)]
    assert batch['orig_size'] == [(20, 30), (16, 16), (12, 10)]


def test_unreadable_images_are_reported_in_the_batch_when_asked(pairs, tmp_path):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    with pytest.raises(ValueError, match='broken.png'):
        LabeledDataset([(str(broken), None)], img_size=8)[0]
    dataset = LabeledDataset([(str(broken), None), pairs[2]], img_size=8, report_unreadable=True)
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate_labeled)))
    assert batch['image'].shape == (1, 3, 8, 8) and batch['name'] == ['c']
    [bad] = batch['unreadable']
    assert bad['path'] == str(broken) and bad['name'] == 'broken'
    assert bad['unreadable'].startswith(f'cannot read image {broken}') and '\n' not in bad['unreadable']
    only_bad = collate_labeled([dataset[0]])
    assert only_bad['image'] is None and only_bad['name'] == [] and len(only_bad['unreadable']) == 1
