"""Tests for models/networks.py: generator and discriminator shapes, ranges, composite, rho clipping."""
import math

import pytest
import torch
from torch.nn.utils import spectral_norm

from models.networks import (ILN, AdaILN, CLTGenerator, Discriminator, GeneratorOutput, InstanceNorm,
                             SMALL_OUTPUT_POSITIONS, ReflectionPad, SpectralConv2d, _InstanceStats)

CH, N_RES = 4, 1


def _images(batch, size, img_ch=3, seed=0):
    """Seeded images in [-1, 1]."""
    return torch.rand(batch, img_ch, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _generator(size, light=True, img_ch=3, seed=0):
    torch.manual_seed(seed)
    return CLTGenerator(img_ch=img_ch, ch=CH, n_res=N_RES, img_size=size, light=light)


@pytest.mark.parametrize('light', [True, False])
@pytest.mark.parametrize('size', [32, 48, 64])
@pytest.mark.parametrize('batch', [1, 3])
def test_generator_output_shapes_and_ranges(batch, size, light):
    x = _images(batch, size)
    with torch.no_grad():
        out = _generator(size, light)(x)
    assert isinstance(out, GeneratorOutput)
    image_shape, map_shape = (batch, 3, size, size), (batch, 1, size, size)
    assert out.translated.shape == image_shape and out.reconstruction.shape == image_shape
    assert out.composite.shape == image_shape
    assert out.mask.shape == map_shape and out.heatmap.shape == map_shape
    assert out.cam_logit.shape == (batch, 2)
    assert out.translated.abs().max() <= 1 and out.reconstruction.abs().max() <= 1
    assert out.mask.min() >= 0 and out.mask.max() <= 1
    assert out.heatmap.min() >= 0
    assert out.composite.abs().max() <= 1
    for field in out:
        assert torch.isfinite(field).all()


def test_composite_is_translation_inside_mask_and_input_outside():
    x = _images(2, 32)
    with torch.no_grad():
        out = _generator(32)(x)
    torch.testing.assert_close(out.composite, out.translated * out.mask + x * (1 - out.mask))


def test_without_reconstruction_skips_it_and_keeps_the_translation():
    generator, x = _generator(32), _images(2, 32)
    with torch.no_grad():
        full = generator(x)
        short = generator(x, with_reconstruction=False)
    assert short.reconstruction is None
    # The reconstruction stream is decoded in the same batch; it must not leak into the translation.
    for name in ('translated', 'cam_logit', 'heatmap', 'mask', 'composite'):
        torch.testing.assert_close(getattr(short, name), getattr(full, name), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('light', [True, False])
def test_a_batched_pass_splits_into_the_separate_passes(light):
    # The training step runs the cycle and identity passes of a generator as one batch.
    generator, first, second = _generator(32, light), _images(1, 32, seed=1), _images(1, 32, seed=2) * 0.3
    with torch.no_grad():
        parts = generator(torch.cat([first, second]), with_reconstruction=False).split([1, 1])
        separate = [generator(first, with_reconstruction=False), generator(second, with_reconstruction=False)]
    for part, alone in zip(parts, separate):
        assert part.reconstruction is None
        for name in ('translated', 'cam_logit', 'heatmap', 'mask', 'composite'):
            torch.testing.assert_close(getattr(part, name), getattr(alone, name), rtol=1e-5, atol=1e-5)


def test_grayscale_generator():
    with torch.no_grad():
        out = _generator(32, img_ch=1)(_images(2, 32, img_ch=1))
    assert out.translated.shape == out.composite.shape == (2, 1, 32, 32)


def test_img_size_not_divisible_by_4_is_refused():
    with pytest.raises(ValueError, match='divisible by 4'):
        CLTGenerator(ch=CH, n_res=N_RES, img_size=30)


def test_generator_has_no_dead_parameters():
    generator, x = _generator(32), _images(2, 32)
    out = generator(x)
    sum(field.float().sum() for field in out).backward()
    unused = [name for name, p in generator.named_parameters() if p.grad is None]
    assert unused == []


def _pretrained_generator(scratch):
    """A generator on (randomly initialised) EfficientNet-Lite0 features holding ``scratch``'s own weights."""
    generator = CLTGenerator(ch=CH, n_res=N_RES, img_size=32, encoder='efficientnet-lite0', pretrained=False)
    missing, unexpected = generator.load_state_dict(scratch.state_dict(), strict=False)
    assert unexpected == [] and missing and all(key.startswith('imagenet') for key in missing)
    return generator


def test_imagenet_features_start_at_zero_so_the_generator_starts_as_the_scratch_one():
    scratch = _generator(32)
    generator, x = _pretrained_generator(scratch), _images(2, 32)
    for name, ours, theirs in zip(GeneratorOutput._fields, generator(x), scratch(x)):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_imagenet_features_stay_frozen_while_their_projection_and_the_input_get_gradients():
    scratch = _generator(32)
    generator = _pretrained_generator(scratch)
    torch.nn.init.normal_(generator.imagenet_projection.weight, std=0.1)  # as after a few steps
    grads = []
    for net in (generator, scratch):
        x = _images(2, 32).requires_grad_()
        sum(field.float().sum() for field in net(x, with_reconstruction=False) if field is not None).backward()
        grads.append(x.grad)
    assert all(p.grad is None for p in generator.imagenet.parameters())
    assert generator.imagenet_projection.weight.grad.abs().sum() > 0
    assert not torch.allclose(*grads)  # the input's gradient also flows back through the frozen features


@pytest.mark.parametrize('size', [32, 64])
@pytest.mark.parametrize('n_layers', [7, 5])
def test_discriminator_patch_and_cam_logits(n_layers, size):
    torch.manual_seed(0)
    disc = Discriminator(img_ch=3, ch=CH, n_layers=n_layers, img_size=size)
    with torch.no_grad():
        patches, cam_logit, heatmap = disc(_images(3, size))
    n_down = min(n_layers - 2, int(math.log2(size)) - 2)
    side = size // 2 ** n_down - 2  # then a stride-1 conv and the 4x4 head, each taking one pixel
    assert patches.shape == (3, 1, side, side)
    assert cam_logit.shape == (3, 2)
    assert heatmap.shape == (3, 1, side + 1, side + 1)
    assert torch.isfinite(patches).all() and torch.isfinite(cam_logit).all()


def test_local_discriminator_sees_smaller_patches_than_global():
    torch.manual_seed(0)
    x = _images(1, 64)
    with torch.no_grad():
        global_patches = Discriminator(ch=CH, n_layers=7, img_size=64)(x)[0]
        local_patches = Discriminator(ch=CH, n_layers=5, img_size=64)(x)[0]
    assert local_patches.shape[-1] > global_patches.shape[-1]


def test_clip_rho_clamps_every_mixing_weight():
    generator = _generator(32)
    norms = [m for m in generator.modules() if isinstance(m, (AdaILN, ILN))]
    assert any(isinstance(m, AdaILN) for m in norms) and any(isinstance(m, ILN) for m in norms)
    with torch.no_grad():
        for i, module in enumerate(norms):
            module.rho.copy_(torch.linspace(-1.5, 2.5, module.rho.numel()).view_as(module.rho) + i * 0.01)
    expected = [m.rho.detach().clamp(0, 1) for m in norms]
    generator.clip_rho()
    for module, want in zip(norms, expected):
        assert module.rho.min() >= 0 and module.rho.max() <= 1
        assert torch.equal(module.rho.detach(), want)  # values inside [0, 1] are untouched


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('size', [16, 8])  # 7 x 7 outputs: a convolution; 3 x 3: the matrix product
def test_spectral_conv_matches_torch_spectral_norm(memory_format, bias, size):
    assert (((size - 4) // 2 + 1) ** 2 <= SMALL_OUTPUT_POSITIONS) == (size == 8)
    torch.manual_seed(0)
    reference = spectral_norm(torch.nn.Conv2d(6, 10, 4, 2, bias=bias)).to(memory_format=memory_format)
    torch.manual_seed(0)
    layer = SpectralConv2d(6, 10, 4, 2, bias=bias).to(memory_format=memory_format)
    # Same initialisation and state-dict keys: checkpoints of either load into the other.
    assert list(layer.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(layer.state_dict().values(), reference.state_dict().values()))
    x = _images(2, size, img_ch=6).contiguous(memory_format=memory_format).requires_grad_()
    params = [x, layer.weight_orig] + ([layer.bias] if bias else [])
    reference_params = [x, reference.weight_orig] + ([reference.bias] if bias else [])
    for _ in range(3):  # training forwards: one power-iteration step each
        out, expected = layer(x), reference(x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert out.is_contiguous(memory_format=memory_format)
        for got, want in zip(torch.autograd.grad(out.square().sum(), params),
                             torch.autograd.grad(expected.square().sum(), reference_params)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(layer.weight_u, reference.weight_u)
        torch.testing.assert_close(layer.weight_v, reference.weight_v)
    layer.eval(), reference.eval()
    u = layer.weight_u.clone()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.weight_u, u)  # eval: no power step
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        assert layer(x).dtype == torch.bfloat16


def test_instance_norm_of_a_bf16_channels_last_map_matches_the_contiguous_one():
    # The CPU path converts such maps to the contiguous layout and back (faster there).
    x = (_images(2, 16, img_ch=8) * 3 + 1).bfloat16()
    grad_out = _images(2, 16, img_ch=8, seed=1).bfloat16()
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        inp = x.clone(memory_format=memory_format).requires_grad_()
        out = InstanceNorm()(inp)
        out.backward(grad_out.contiguous(memory_format=memory_format))
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=memory_format)
        results.append((out.float(), inp.grad.float()))
    (out_a, grad_a), (out_b, grad_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)
    torch.testing.assert_close(out_a, torch.nn.functional.instance_norm(x.float()), atol=0.05, rtol=0.02)


def test_reflection_pad_keeps_bf16_under_autocast_with_the_same_values():
    # CPU autocast would run torch's pad in fp32: a cast up and, at the next convolution, back down.
    x = _images(2, 16, img_ch=8).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.nn.ReflectionPad2d(2)(x).dtype == torch.float32
        out = ReflectionPad(2)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8, 20, 20)
    assert torch.equal(out.float(), torch.nn.ReflectionPad2d(2)(x.float()))


def test_channels_last_input_gives_the_same_outputs():
    generator = _generator(32)
    torch.manual_seed(0)
    disc = Discriminator(ch=CH, n_layers=5, img_size=32).eval()  # eval: no spectral-norm power step per call
    x = _images(2, 32)
    with torch.no_grad():
        ref_g, ref_d = generator(x), disc(x)
        generator.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        got_g, got_d = generator(x_cl), disc(x_cl)
    for ref, got in zip(list(ref_g) + list(ref_d), list(got_g) + list(got_d)):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_forward_matches_shapes_and_cpu():
    generator = _generator(32)
    torch.manual_seed(0)
    disc = Discriminator(ch=CH, n_layers=7, img_size=32)
    x = _images(2, 32)
    with torch.no_grad():
        ref = generator(x)
        out = generator.cuda()(x.cuda())
        patches, cam_logit, _ = disc.cuda()(out.composite)
    assert all(field.device.type == 'cuda' for field in out)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3)
    assert cam_logit.shape == (2, 2) and patches.device.type == 'cuda'


def _reference_norm(x, rho, gamma, beta, eps=1e-5):
    """rho * InstanceNorm(x) + (1 - rho) * LayerNorm(x), then gamma / beta, written out in float64."""
    x = x.double()
    x_in = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), keepdim=True) + eps)
    x_ln = (x - x.mean((1, 2, 3), keepdim=True)) / torch.sqrt(x.var((1, 2, 3), keepdim=True) + eps)
    return (rho * x_in + (1 - rho) * x_ln) * gamma + beta


def _full_size_saved(layer, *inputs):
    """Distinct tensors of the input's size that autograd keeps for the backward of ``layer(*inputs)``."""
    storages = set()

    def pack(tensor):
        if tensor.numel() == inputs[0].numel():
            storages.add(tensor.untyped_storage().data_ptr())
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(*inputs)
    return len(storages)


@pytest.mark.parametrize('kind', ['AdaILN', 'ILN'])
def test_norm_layers_match_the_formula_and_keep_one_full_size_tensor(kind):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 6, 8, 8, generator=gen) * 3 + 5).requires_grad_()
    rho = torch.rand(1, 6, 1, 1, generator=gen)
    gamma, beta = torch.randn(2, 6, generator=gen), torch.randn(2, 6, generator=gen)
    if kind == 'AdaILN':
        layer, args = AdaILN(6), (gamma, beta)
        expected = _reference_norm(x, rho.double(), gamma.double()[:, :, None, None], beta.double()[:, :, None, None])
    else:
        layer, args = ILN(6), ()
        gamma, beta = gamma[:1, :, None, None], beta[:1, :, None, None]
        with torch.no_grad():
            layer.gamma.copy_(gamma)
            layer.beta.copy_(beta)
        expected = _reference_norm(x, rho.double(), gamma.double(), beta.double())
    with torch.no_grad():
        layer.rho.copy_(rho)
    out = layer(x, *args)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), expected, atol=1e-5)
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grad, = torch.autograd.grad((out.double() * weights).sum(), x)
    grad_expected, = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.allclose(grad, grad_expected.float(), atol=1e-4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer(x.bfloat16(), *args).dtype == torch.bfloat16
    # Memory: the backward needs x in fp32 once (its bf16 input would add a copy), nothing else full-size.
    assert _full_size_saved(layer, x, *args) == 1


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_instance_stats_match_torch_var_mean_and_its_gradients(memory_format):
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 6, 5, dtype=torch.double) * 4 + 3).contiguous(memory_format=memory_format)
    x.requires_grad_()
    var, mean = _InstanceStats.apply(x)
    want_var, want_mean = torch.var_mean(x, dim=(2, 3), keepdim=True)
    torch.testing.assert_close((var, mean), (want_var, want_mean))
    weights = torch.randn_like(var), torch.randn_like(mean)
    got = torch.autograd.grad((var * weights[0] + mean * weights[1]).sum(), x)[0]
    want = torch.autograd.grad((want_var * weights[0] + want_mean * weights[1]).sum(), x)[0]
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(_InstanceStats.apply, (x,))
