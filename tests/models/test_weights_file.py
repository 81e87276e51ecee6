"""Tests for models/weights_file.py: a two-stage file built for one of its maps runs that stage alone, and a
two-stage file whose stages work at different sizes feeds each its own."""
import argparse
import os

import torch

from conftest import REPO_ROOT
from data.weak_dataset import resize_square
from models.cascade_model import CascadeModel
from models.weights_file import build_model, read_state, stored_choices
from tools.export_weights import cascade_state

OPT = argparse.Namespace(device='cpu', amp='off', channels_last=True, compile=False, is_train=False)


def test_a_cascade_file_serving_one_map_builds_that_stage_alone():
    path = os.path.join(REPO_ROOT, 'weights', 'BraTS.pt')
    state = read_state(path)
    whole = build_model(OPT, state, path)
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    both = whole.infer(images)
    seg = build_model(OPT, state, path, serve_map='seg')
    assert type(seg).__name__ == 'SegModel' and seg.model_names == ['seg']
    torch.testing.assert_close(seg.infer(images)['maps']['seg'], both['maps']['seg'])
    generator = build_model(OPT, state, path, serve_map='attention-inverted')
    assert type(generator).__name__ == 'CLTNetModel' and generator.model_names == ['G_AB']
    alone = generator.infer(images)
    torch.testing.assert_close(alone['maps']['cam'], both['maps']['cam'])
    torch.testing.assert_close(alone['score'], both['score'])
    # A single-stage file (the U-Net alone) serves its own map as it is.
    unet_alone = CascadeModel.stage_state(state, 'seg')
    assert type(build_model(OPT, unet_alone, path, serve_map='seg')).__name__ == 'SegModel'


def test_a_cascade_whose_unet_works_at_twice_the_size_feeds_each_stage_its_own_size():
    """weights/ISIC.pt: the generator at 128 px, the U-Net on pretrained features at 256 px."""
    path = os.path.join(REPO_ROOT, 'weights', 'ISIC.pt')
    state = read_state(path)
    stage1 = read_state(os.path.join(REPO_ROOT, 'weights', 'ISIC_stage1.pt'))
    assert state['architecture']['img_size'] == stage1['architecture']['img_size'] == 128
    assert state['architecture']['seg_img_size'] == 256
    whole = build_model(OPT, state, path)
    assert whole.opt.img_size == 256 and whole.architecture() == state['architecture']
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    both = whole.infer(images)
    assert both['maps']['seg'].shape == (2, 256, 256) and both['maps']['cam'].shape[-1] < 256
    seg = build_model(OPT, state, path, serve_map='seg')
    assert seg.opt.img_size == 256
    torch.testing.assert_close(seg.infer(images)['maps']['seg'], both['maps']['seg'])
    generator = build_model(OPT, state, path, serve_map='cam')
    assert generator.opt.img_size == 128
    alone = generator.infer(resize_square(images.reshape(-1, 256, 256), 128).reshape(2, 3, 128, 128))
    torch.testing.assert_close(alone['score'], both['score'])


def test_a_cascade_of_one_size_records_no_second_size():
    path = os.path.join(REPO_ROOT, 'weights', 'BraTS.pt')
    state = read_state(path)
    assert 'seg_img_size' not in state['architecture'] and build_model(OPT, state, path).opt.img_size == 128
    seg_state = dict(state, architecture={'model': 'seg', 'img_size': 128, 'img_ch': 3, 'ch': 24})
    architecture = cascade_state(seg_state, os.path.join(REPO_ROOT, 'weights', 'BraTS_stage1.pt'))['architecture']
    assert architecture == dict(state['architecture'], seg_ch=24)


def test_stored_choices_are_the_files_own_or_its_stage_ones_for_that_map():
    """A file's choices serve the map they were made for ('auto': the file's own); a two-stage file asked for
    its stage-1 map serves the stage-1 file's; a file without complete choices (a checkpoint) has none."""
    own = {'map_mode': 'seg', 'binarize': 'fixed', 'threshold': 0.1, 'postprocess': 'none'}
    stage1 = {'map_mode': 'cam', 'binarize': 'otsu', 'threshold': None, 'postprocess': 'central'}
    state = {'selection': own, 'stage1': {'selection': stage1}}
    assert stored_choices(state) is own and stored_choices(state, 'seg') is own
    assert stored_choices(state, 'cam') is stage1 and stored_choices(state, 'attention') is None
    assert stored_choices({'options': {}}) is None
    assert stored_choices({'selection': {'map_mode': 'seg', 'threshold': 0.1}}) is None
