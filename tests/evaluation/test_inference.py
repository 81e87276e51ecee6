"""Tests for CLTNetModel.infer (lesion map modes) and evaluation/inference.py (maps at the original image size)."""
import numpy as np
import pytest
import torch
from PIL import Image

from data.labeled_dataset import LabeledDataset
from models import create_model
from models.cltnet_model import CLTNetModel
from models.weights_file import model_options
from evaluation.inference import predict_batch, predict_split, stack_by_shape
from evaluation.postprocess import foreground_mask

# Original image sizes (H, W), none equal to the 32 px network size; two differ within one batch.
SIZES = [(40, 28), (40, 28), (24, 36)]
# What predict_split takes besides the batch size: data loading in this process, on the CPU.
ON_CPU = dict(num_workers=0, device='cpu')


@pytest.fixture
def tiny_model(tiny_opt, tiny_test_opt):
    """Factory ``tiny_model()``: a seeded, randomly initialised tiny generator-only model (test mode), with
    the architecture a tiny run's checkpoint brings (test.py takes it from there, not from its flags)."""
    def make():
        torch.manual_seed(0)
        architecture = {key: getattr(tiny_opt(), key) for key in CLTNetModel.architecture_keys}
        model = create_model(model_options(tiny_test_opt(), {'architecture': architecture}))
        model.train(False)
        return model
    return make


@pytest.fixture
def eval_pairs(tmp_path):
    """(image, label) pairs of three RGB images at SIZES: a bright noisy head on a black frame with a
    lesion square; the third one has no label (as in testB)."""
    rng = np.random.default_rng(0)
    pairs = []
    for index, (height, width) in enumerate(SIZES):
        raw = rng.integers(60, 160, (height, width, 3)).astype(np.uint8)
        raw[:3], raw[-3:], raw[:, :3], raw[:, -3:] = 0, 0, 0, 0
        label = np.zeros((height, width), np.uint8)
        label[8:16, 8:18] = 255
        raw[label > 0] = 230
        image_path = tmp_path / f'img_{index}.png'
        Image.fromarray(raw).save(image_path)
        label_path = None
        if index < 2:
            label_path = tmp_path / f'img_{index}_segmentation.png'
            Image.fromarray(label).save(label_path)
        pairs.append((str(image_path), None if label_path is None else str(label_path)))
    return pairs


def test_infer_returns_every_map_mode_in_unit_interval(tiny_model):
    model = tiny_model()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = model.infer(images)
    assert set(out['maps']) == set(CLTNetModel.map_modes)
    for mode, values in out['maps'].items():
        assert values.shape == (3, 32, 32), mode
        assert values.dtype == torch.float32 and torch.isfinite(values).all(), mode
        assert values.min() >= 0 and values.max() <= 1, mode
    assert out['score'].shape == (3,) and ((out['score'] >= 0) & (out['score'] <= 1)).all()
    assert out['translated'].shape == (3, 3, 32, 32)
    assert out['translated'].min() >= -1 and out['translated'].max() <= 1
    assert out['heatmap'].shape[0] == 3 and out['heatmap'].ndim == 3
    assert out['heatmap'].min() >= 0 and out['heatmap'].max() <= 1


def test_infer_is_batch_independent(tiny_model):
    """Batched inference gives each image the maps it gets alone (no batch statistics at test time)."""
    model = tiny_model()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batched = model.infer(images)
    for i in range(3):
        alone = model.infer(images[i:i + 1])
        for mode in CLTNetModel.map_modes:
            torch.testing.assert_close(alone['maps'][mode][0], batched['maps'][mode][i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(alone['score'][0], batched['score'][i], atol=1e-5, rtol=1e-4)


def test_infer_works_on_the_training_model_too(tiny_opt):
    torch.manual_seed(0)
    model = create_model(tiny_opt())
    out = model.infer(torch.zeros(2, 3, 32, 32))
    assert all(values.shape == (2, 32, 32) for values in out['maps'].values())


@pytest.mark.parametrize('batch_size', [1, 2])
def test_predict_split_maps_are_at_the_original_size_and_zero_on_background(tiny_model, eval_pairs,
                                                                            batch_size):
    model = tiny_model()
    items = predict_split(model, eval_pairs, 'test', batch_size=batch_size, keep_visuals=True, **ON_CPU)
    assert [item['name'] for item in items] == ['img_0', 'img_1', 'img_2']
    for item, (height, width), (image_path, label_path) in zip(items, SIZES, eval_pairs):
        assert item['path'] == image_path
        assert set(item['maps']) == set(CLTNetModel.map_modes) | {'attention-inverted'}
        foreground = foreground_mask(np.asarray(Image.open(image_path).convert('RGB')))
        assert not foreground.all() and foreground.any()
        for mode, prob in item['maps'].items():
            assert prob.shape == (height, width) and prob.dtype == np.float32, mode
            assert prob.min() >= 0 and prob.max() <= 1, mode
            assert not prob[~foreground].any(), mode  # zero outside the image foreground
        # The inverted attention complements the attention inside the foreground.
        inside = item['maps']['attention'][foreground] + item['maps']['attention-inverted'][foreground]
        np.testing.assert_allclose(inside, 1.0, atol=1e-6)
        assert 0 <= item['score'] <= 1
        if label_path is None:
            assert item['gt'] is None
        else:
            assert item['gt'].dtype == bool and item['gt'].shape == (height, width)
            assert item['gt'][10, 10] and not item['gt'][0, 0]
        assert item['raw'].shape == (height, width, 3) and item['raw'].dtype == np.uint8
        assert item['translated'].shape == (32, 32, 3) and item['translated'].dtype == np.uint8
        assert item['heatmap'].dtype == np.uint8 and item['heatmap'].ndim == 2


def test_predict_split_matches_the_model_and_the_batch_size(tiny_model, eval_pairs):
    """Maps do not depend on the batch size; without keep_visuals no images are kept."""
    model = tiny_model()
    one = predict_split(model, eval_pairs, 'test', batch_size=1, **ON_CPU)
    three = predict_split(model, eval_pairs, 'test', batch_size=3, **ON_CPU)
    for a, b in zip(one, three):
        assert 'raw' not in a and 'translated' not in a and 'heatmap' not in a
        for mode in a['maps']:
            np.testing.assert_allclose(a['maps'][mode], b['maps'][mode], atol=1e-5)
        assert a['score'] == pytest.approx(b['score'], abs=1e-5)


def test_stack_by_shape_groups_images_of_one_size(tiny_model, eval_pairs):
    items = predict_split(tiny_model(), eval_pairs[:2], 'val', batch_size=8, **ON_CPU)
    groups = stack_by_shape(items, 'difference')
    assert list(groups) == [(40, 28)]
    probs, gts = groups[(40, 28)]
    assert probs.shape == gts.shape == (2, 40, 28) and gts.dtype == torch.bool
    assert torch.equal(probs[1], torch.from_numpy(items[1]['maps']['difference']))


def test_predict_batch_upsamples_only_the_modes_asked_for(tiny_model, eval_pairs):
    model = tiny_model()
    every = predict_split(model, eval_pairs, 'test', batch_size=3, **ON_CPU)
    raws = [np.asarray(Image.open(image).convert('RGB')) for image, _ in eval_pairs]
    images = torch.stack([LabeledDataset(eval_pairs, 32)[i]['image'] for i in range(3)])
    for modes in (['difference'], ['attention-inverted']):
        items = predict_batch(model, images, raws, modes=modes)
        for item, full in zip(items, every):
            assert list(item['maps']) == modes and item['score'] == pytest.approx(full['score'], abs=1e-5)
            np.testing.assert_allclose(item['maps'][modes[0]], full['maps'][modes[0]], atol=1e-5)
