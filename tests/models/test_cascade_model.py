"""Tests for models/cascade_model.py with a stage 1 other than CLTNet: a CAM classifier (on the pretrained
encoder) joined with a pretrained-encoder U-Net serves both stages' maps, and each stage alone."""
import argparse

import torch

from data.weak_dataset import resize_square
from models.base_model import atomic_torch_save
from models.cam_model import CAMModel
from models.cascade_model import CascadeModel, split_architecture
from models.seg_model import SegModel
from models.weights_file import build_model, read_state
from tools.export_weights import cascade_state

BASE = dict(device='cpu', amp='off', channels_last=True, compile=False, is_train=False, img_ch=3)


def _state(model, **extra):
    return dict(model.state_dict(nets_only=True), options={}, step=1, **extra)


def test_a_cam_stage1_and_a_pretrained_unet_make_a_cascade_served_whole_or_by_stage(tmp_path):
    torch.manual_seed(0)
    cam = CAMModel(argparse.Namespace(**BASE, model='cam', img_size=64, ch=4, encoder='efficientnet-lite0'))
    seg = SegModel(argparse.Namespace(**BASE, model='seg', img_size=96, ch=4, encoder='efficientnet-lite0'))
    atomic_torch_save(_state(cam), str(tmp_path / 'cam.pt'))
    state = cascade_state(_state(seg), str(tmp_path / 'cam.pt'))
    assert state['architecture'] == dict(model='cascade', img_size=64, img_ch=3, ch=4, encoder='efficientnet-lite0',
                                         stage1_model='cam', seg_ch=4, seg_img_size=96,
                                         seg_encoder='efficientnet-lite0')
    assert split_architecture(state['architecture']) == (cam.architecture(), seg.architecture())
    assert set(state['nets']) == {'classifier', 'seg'} == set(CascadeModel.served_nets(state['architecture']))
    path = str(tmp_path / 'cascade.pt')
    atomic_torch_save(state, path)

    opt = argparse.Namespace(device='cpu', amp='off', channels_last=True, compile=False, is_train=False)
    whole = build_model(opt, read_state(path), path)
    assert whole.model_names == ['classifier', 'seg'] and whole.map_modes == ('cam', 'seg', 'seg-flips')
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    both = whole.infer(images)
    assert set(both['maps']) == {'cam', 'seg', 'seg-flips'}
    assert both['maps']['cam'].shape == (2, 64, 64) and both['maps']['seg'].shape == (2, 96, 96)
    alone = build_model(opt, read_state(path), path, serve_map='cam')
    assert type(alone).__name__ == 'CAMModel'
    torch.testing.assert_close(alone.infer(resize_square(images, 64))['score'], both['score'])
    unet = build_model(opt, read_state(path), path, serve_map='seg')
    torch.testing.assert_close(unet.infer(images)['maps']['seg'], both['maps']['seg'])
