"""Tests for models/weights_file.py: a two-stage file built for one of its maps runs that stage alone."""
import argparse
import os

import torch

from conftest import REPO_ROOT
from models.cascade_model import CascadeModel
from models.weights_file import build_model, read_state

OPT = argparse.Namespace(device='cpu', amp='off', channels_last=True, compile=False, is_train=False)


def test_a_cascade_file_serving_one_map_builds_that_stage_alone():
    path = os.path.join(REPO_ROOT, 'weights', 'ISIC.pt')
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
