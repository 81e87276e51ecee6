"""Tests for models/cltnet_model.py and models/base_model.py: losses, the G/D steps, checkpoints."""
import math
import os

import numpy as np
import pytest
import torch

from models import create_model
from models.base_model import CheckpointError
from models.networks import GeneratorOutput


@pytest.fixture
def batch():
    """One fixed seeded batch of two lesion (A) and two normal (B) 32 px images in [-1, 1]."""
    gen = torch.Generator().manual_seed(1)
    return {'A': torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1,
            'B': torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1}


@pytest.fixture
def make_model(tiny_opt):
    """Factory ``make_model(*flags, seed=0)``: a tiny CLTNet model on CPU, initialised from ``seed``."""
    def make(*flags, seed=0):
        torch.manual_seed(seed)
        return create_model(tiny_opt(*flags))
    return make


class _FixedGenerator(torch.nn.Module):
    """Stands in for G_AB: the same hand-made output whatever the input, so every map is known by hand."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, images, with_reconstruction=True):
        return self.output


def test_lesion_maps_match_values_worked_out_by_hand(make_model):
    """Two 32 px images (all 0) whose translations differ from them at one pixel each: the difference map
    is that change blurred by a 3-tap Gaussian (sigma = max(0.5, 0.015 * 32) = 0.5), fused is the
    geometric mean with a constant attention, cam the [0, 1]-scaled heatmap times sigmoid(mean CAM logit)."""
    size = 32
    images = torch.zeros(2, 3, size, size)
    translated = images.clone()
    translated[0, :, 16, 16] = -0.8  # |change| 0.8 on all 3 channels: 0.8 / 2 = 0.4
    translated[1, 0, 10, 20] = 0.6   # 0.6 on one channel: 0.6 / 3 / 2 = 0.1
    attention = torch.stack([torch.full((1, size, size), 0.36), torch.full((1, size, size), 0.81)])
    ramp = torch.arange(size, dtype=torch.float32).expand(size, size)
    heatmap = torch.stack([ramp, 2 * ramp + 5])[:, None]  # both scale to column / 31
    cam_logit = torch.tensor([[math.log(3), math.log(3)], [0.5, -2.5]])  # sigmoid of the mean: 3/4, 1/(1+e)
    model = make_model()
    model.G_AB = _FixedGenerator(GeneratorOutput(translated, cam_logit, heatmap, attention, None, None))

    out = model.infer(images)

    taps = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.5 ** 2))
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    difference = np.zeros((2, size, size))
    difference[0, 15:18, 15:18] = 0.4 * kernel
    difference[1, 9:12, 19:22] = 0.1 * kernel
    score = np.array([0.75, 1 / (1 + math.e)])
    expected = {'attention': np.stack([np.full((size, size), 0.36), np.full((size, size), 0.81)]),
                'difference': difference,
                'fused': np.sqrt(np.array([0.36, 0.81])[:, None, None] * difference),
                'cam': score[:, None, None] * np.broadcast_to(np.arange(size) / (size - 1), (2, size, size))}
    assert set(out['maps']) == set(expected)
    for mode, values in expected.items():
        np.testing.assert_allclose(out['maps'][mode].numpy(), values, rtol=1e-5, atol=1e-6, err_msg=mode)
    np.testing.assert_allclose(out['score'].numpy(), score, rtol=1e-6)


def _generators(model):
    return [model.G_AB, model.G_BA]


def _params(nets):
    return [p for net in nets for p in net.parameters()]


def test_losses_are_finite_scalars_and_visuals_have_input_size(make_model, batch):
    model = make_model()
    model.set_input(batch)
    model.optimize_parameters()
    losses = model.get_current_losses()
    assert list(losses) == model.loss_names
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    grouped = [name for names in model.loss_groups.values() for name in names]
    assert sorted(grouped) == sorted(model.loss_names)  # every loss is plotted exactly once
    visuals = model.get_current_visuals()
    assert list(visuals) == model.visual_names
    for name, tensor in visuals.items():
        assert tensor.shape[0] == 2 and tensor.shape[-2:] == (32, 32), name


def test_a_few_steps_on_one_batch_reduce_the_generator_loss(make_model, batch):
    model = make_model()
    model.set_input(batch)
    history = []
    for _ in range(9):  # each step reports the loss before its update: 8 updates between first and last
        model.optimize_parameters()
        history.append({k: float(v) for k, v in model.get_current_losses().items()})
    assert history[-1]['G_total'] < 0.95 * history[0]['G_total']
    assert history[-1]['G_cycle'] < history[0]['G_cycle']


# Each loss weight and the losses it scales.
LOSSES_OF_WEIGHT = {'adv_weight': ('G_adv_A', 'G_adv_B', 'D_A', 'D_B'), 'cycle_weight': ('G_cycle',),
                    'identity_weight': ('G_identity',), 'cam_weight': ('G_cam',), 'recon_weight': ('G_recon',),
                    'mask_weight': ('G_mask',)}


def test_each_loss_weight_scales_exactly_the_loss_it_names(make_model, batch):
    """All weights 1, then one at a time 0: that weight's losses vanish, every other loss is bit-equal and
    G_total loses exactly those terms. The per-dataset defaults are equal in pairs (BraTS: cycle =
    identity = recon = 10), which would hide a swap of two weights."""
    def first_losses(*flags):
        model = make_model(*flags)
        model.set_input(batch)
        model.optimize_parameters()  # the losses it reports are those before its update
        return {name: float(value) for name, value in model.get_current_losses().items()}

    ones = [arg for weight in LOSSES_OF_WEIGHT for arg in (f'--{weight}', '1')]
    full = first_losses(*ones)
    assert all(full[name] > 0 for names in LOSSES_OF_WEIGHT.values() for name in names), full
    for weight, named in LOSSES_OF_WEIGHT.items():
        without = first_losses(*ones, f'--{weight}', '0')
        for name in full:
            if name in named:
                assert without[name] == 0, (weight, name)
            elif name != 'G_total':
                assert without[name] == full[name], (weight, name)
        removed = sum(full[name] for name in named if name.startswith('G_'))
        assert without['G_total'] == pytest.approx(full['G_total'] - removed, rel=1e-6), weight


def test_discriminators_frozen_in_g_step_and_fakes_detached_in_d_step(make_model, batch):
    model = make_model()
    model.set_input(batch)
    discriminators, generators = _params(model.discriminators), _params(_generators(model))
    seen = {}
    step_G, step_D = model.optimizers['G'].step, model.optimizers['D'].step

    def spy_G(*args, **kwargs):
        # Called after the generator backward: the discriminators must have taken no part in it.
        seen['D_requires_grad_in_G'] = any(p.requires_grad for p in discriminators)
        seen['D_grad_after_G'] = [p.grad for p in discriminators if p.grad is not None]
        seen['G_grad_after_G'] = [p.grad.clone() for p in generators]
        return step_G(*args, **kwargs)

    def spy_D(*args, **kwargs):
        seen['G_grad_after_D'] = [p.grad for p in generators]
        seen['D_has_grad'] = all(p.grad is not None for p in discriminators)
        return step_D(*args, **kwargs)

    model.optimizers['G'].step, model.optimizers['D'].step = spy_G, spy_D
    model.optimize_parameters()

    assert seen['D_requires_grad_in_G'] is False
    assert seen['D_grad_after_G'] == []
    # The discriminator loss adds nothing to the generators' gradients: the fakes were detached.
    assert len(seen['G_grad_after_D']) == len(seen['G_grad_after_G'])
    for before, after in zip(seen['G_grad_after_G'], seen['G_grad_after_D']):
        assert torch.equal(before, after)
    assert seen['D_has_grad']
    assert all(p.requires_grad for p in discriminators + generators)


@pytest.mark.parametrize('amp', ['off', 'bf16'])
def test_recompute_trains_exactly_like_stored_activations(make_model, batch, amp):
    models = {flag: make_model('--recompute', flag, '--amp', amp) for flag in (False, True)}
    encoder_runs = {}
    for flag, model in models.items():
        encoder_runs[flag] = []
        encoder = model.G_AB.encoder
        # Counted in forward itself: checkpoint's recomputation does not fire forward hooks.
        encoder.forward = lambda x, run=encoder.forward, runs=encoder_runs[flag]: runs.append(1) or run(x)
        model.set_input(batch)
        for _ in range(2):
            model.optimize_parameters()
    # G_AB's translation and its batched cycle/identity pass, per step; once more in each backward pass.
    assert (len(encoder_runs[False]), len(encoder_runs[True])) == (4, 8)
    stored, recomputed = models[False], models[True]
    assert torch.equal(stored.loss_G_total, recomputed.loss_G_total)
    for a, b in zip(_params(_generators(stored) + stored.discriminators),
                    _params(_generators(recomputed) + recomputed.discriminators)):
        assert torch.equal(a, b)


def test_rho_stays_in_unit_interval_after_steps(make_model, batch):
    model = make_model('--lr', '0.5')  # a huge step pushes rho far out of [0, 1] before clipping
    model.set_input(batch)
    model.optimize_parameters()
    rhos = [p for g in _generators(model) for n, p in g.named_parameters() if n.endswith('rho')]
    assert rhos and all(r.min() >= 0 and r.max() <= 1 for r in rhos)
    assert any((r == 1).any() for r in rhos)  # the step did push some past 1, and they were clipped


def _assert_same_state(a, b, path='state'):
    """Recursively: equal structure, bit-equal tensors, equal plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for key in a:
            _assert_same_state(a[key], b[key], f'{path}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f'{path}[{i}]')
    else:
        assert a == b, path


def test_checkpoint_round_trip_is_bit_exact(make_model, batch, tmp_path):
    trained = make_model(seed=0)
    trained.set_input(batch)
    trained.optimize_parameters()
    path = tmp_path / 'ckpt' / 'model.pt'
    trained.save(str(path), step=1)
    assert os.listdir(tmp_path / 'ckpt') == ['model.pt']  # atomic write leaves no temp file

    fresh = make_model(seed=123)
    assert not torch.equal(fresh.G_AB.encoder[1].weight, trained.G_AB.encoder[1].weight)
    state = fresh.load(str(path))
    assert state['step'] == 1
    _assert_same_state(trained.state_dict(), fresh.state_dict())
    assert trained.state_dict()['optimizers']['G']['state']  # Adam moments exist and were compared

    # Both continue identically from the restored state.
    for model in (trained, fresh):
        model.set_input(batch)
        model.optimize_parameters()
    _assert_same_state(trained.state_dict(), fresh.state_dict())


def test_pretrained_features_are_recorded_stay_frozen_and_come_back_from_the_file(make_model, batch, tmp_path):
    model = make_model('--encoder', 'efficientnet-lite0')
    assert model.architecture()['encoder'] == 'efficientnet-lite0'
    assert 'encoder' not in make_model().architecture()  # scratch files read as they were written
    frozen = {key: value.clone() for key, value in model.G_AB.imagenet.state_dict().items()}
    model.set_input(batch)
    for _ in range(2):
        model.optimize_parameters()
    assert all(torch.equal(value, model.G_AB.imagenet.state_dict()[key]) for key, value in frozen.items())
    assert model.G_AB.imagenet_projection.weight.abs().sum() > 0
    path = tmp_path / 'model.pt'
    model.save(str(path), step=2)
    fresh = make_model('--encoder', 'efficientnet-lite0', seed=123)
    fresh.load(str(path))
    _assert_same_state(model.state_dict(nets_only=True), fresh.state_dict(nets_only=True))


@pytest.mark.parametrize('flags, differing', [(('--ch', '8'), ['--ch 4 (checkpoint) vs 8 (now)']),
                                              (('--light', 'False', '--n_res', '2'),
                                               ['--n_res 1 (checkpoint) vs 2 (now)',
                                                '--light True (checkpoint) vs False (now)'])])
def test_checkpoint_of_another_architecture_is_refused(make_model, tmp_path, flags, differing):
    path = str(tmp_path / 'small.pt')
    make_model().save(path)
    other = make_model(*flags)
    with pytest.raises(CheckpointError) as info:
        other.load(path)
    message = str(info.value)
    assert path in message and 'another architecture' in message
    for text in differing:
        assert text in message


def test_random_file_is_refused(make_model, tmp_path):
    path = tmp_path / 'garbage.pt'
    path.write_bytes(bytes(range(256)) * 4)  # fixed bytes: deterministic
    with pytest.raises(CheckpointError, match='cannot be read') as info:
        make_model().load(str(path))
    assert str(path) in str(info.value)


def test_foreign_torch_file_is_refused(make_model, tmp_path):
    path = str(tmp_path / 'foreign.pt')
    torch.save({'state_dict': {'w': torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match='not a CLTNet-Seg checkpoint') as info:
        make_model().load(path)
    assert path in str(info.value)
