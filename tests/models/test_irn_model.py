"""Tests for models/irn_model.py: the path-max affinity, the boundary-aware random walk, the relation labels
and their loss, the frozen CAM file, and IRN through train.py and test.py on the tiny dataset."""
import argparse
import json
import os

import pytest
import torch
import torch.nn.functional as F

import train
from models.base_model import CHECKPOINT_FORMAT
from models.irn_model import (IGNORE, IRNModel, boundary_losses, boundary_network, boundary_random_walk, dense_affinity,
                              load_frozen_cam, path_max_affinity, relation_labels, seed_labels, walk_directions)
from models.random_walk import within_radius
from models.weights_file import load_model
from conftest import test_script


def _affinity_between(boundary, radius, first, second):
    """The dense affinity of two (y, x) positions of the H x W ``boundary`` map."""
    width = boundary.shape[-1]
    dense = dense_affinity(boundary[None], radius)[0]
    return float(dense[first[0] * width + first[1], second[0] * width + second[1]])


def test_path_max_affinity_is_near_zero_across_a_boundary_line_and_near_one_beside_it():
    boundary = torch.full((8, 8), 0.02)
    boundary[:, 4] = 0.98  # a strong vertical line
    assert _affinity_between(boundary, 3, (3, 2), (3, 5)) == pytest.approx(0.02, abs=1e-6)
    assert _affinity_between(boundary, 3, (1, 3), (3, 5)) == pytest.approx(0.02, abs=1e-6)
    assert _affinity_between(boundary, 3, (2, 1), (4, 3)) == pytest.approx(0.98, abs=1e-6)
    assert _affinity_between(boundary, 3, (0, 5), (2, 7)) == pytest.approx(0.98, abs=1e-6)
    # A diagonal line one cell thick: a pair across it cannot slip between two of its cells.
    diagonal = torch.eye(8)
    assert _affinity_between(diagonal, 2, (3, 2), (2, 3)) == 0
    assert _affinity_between(diagonal, 2, (5, 4), (6, 3)) == 1


def test_dense_affinity_is_symmetric_one_on_the_diagonal_and_zero_beyond_the_radius():
    boundary = torch.rand(1, 6, 7, generator=torch.Generator().manual_seed(0))
    dense = dense_affinity(boundary, 2.5)[0]
    assert torch.equal(dense, dense.T) and torch.equal(dense.diagonal(), torch.ones(42))
    assert not dense[~within_radius(6, 7, 2.5)].any()
    # Each pair once per direction: the half of the neighbourhood that the other half mirrors.
    assert path_max_affinity(boundary, 2.5).shape == (1, len(walk_directions(2.5)), 42)
    assert len(walk_directions(2.5)) == (int(within_radius(9, 9, 2.5)[40].sum()) - 1) // 2


def test_the_walk_spreads_a_seed_inside_its_region_and_stops_at_the_boundary():
    boundary = torch.zeros(12, 12)
    boundary[2, 2:9] = boundary[8, 2:9] = boundary[2:9, 2] = boundary[2:9, 8] = 1.0  # a closed square
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[3:8, 3:8] = True
    cam = torch.zeros(1, 12, 12)
    cam[0, 4, 4] = 1.0  # one seed inside
    walked = boundary_random_walk(cam, boundary[None], radius=2.5, beta=10, lengths=(256,))[256][0]
    assert (walked[inside] > 0).all(), 'the seed did not reach its whole region'
    assert torch.count_nonzero(walked[~inside]) == 0, 'the seed crossed the boundary'
    # A weak boundary (0.5, sharpened by beta) lets a little through.
    leaky = boundary_random_walk(cam, boundary[None] * 0.5, radius=2.5, beta=10, lengths=(256,))[256][0]
    beyond = ~inside & (boundary == 0)
    assert (leaky[beyond] > 0).all() and leaky[inside].mean() > 10 * leaky[beyond].mean()


def test_relation_labels_pair_the_confident_seeds_and_ignore_the_uncertain_band():
    cam = torch.tensor([[[0.0, 0.02, 0.2, 0.6, 0.9]]])
    seeds = seed_labels(cam, fg_threshold=0.3, bg_threshold=0.05)
    assert seeds.tolist() == [[[0, 0, IGNORE, 1, 1]]]
    bg_pos, fg_pos, neg = relation_labels(seeds, radius=3)
    directions = walk_directions(3)

    def pairs(mask):
        return sorted((x, x + directions[d][1]) for d, x in mask[0].nonzero().tolist())
    assert pairs(bg_pos) == [(0, 1)] and pairs(fg_pos) == [(3, 4)]
    assert pairs(neg) == [(0, 3), (1, 3), (1, 4)]  # (0, 4) lies beyond the radius; nothing touches 2


def test_the_boundary_loss_is_lowest_for_a_boundary_between_the_classes_alone():
    seeds = torch.zeros(1, 6, 6, dtype=torch.long)
    seeds[:, :, 3], seeds[:, :, 4:] = IGNORE, 1  # background, an uncertain column, lesion
    labels = relation_labels(seeds, radius=2)

    def loss(boundary):
        bg_pos, fg_pos, neg = boundary_losses(path_max_affinity(boundary[None], 2), labels)
        return float(((bg_pos + fg_pos) / 2 + neg) / 2)
    edge = torch.zeros(6, 6)
    edge[:, 3] = 1.0  # along the uncertain column
    assert loss(edge * 0.99) < 0.1
    assert loss(edge * 0.99) < loss(torch.zeros(6, 6)) / 10 and loss(edge * 0.99) < loss(torch.full((6, 6), 0.99)) / 10


def _discs(generator, n):
    """n noisy 64-px images of a bright disc (radius 14 px) at a random place, with each stride-4 position's
    distance to the disc's centre (n x 16 x 16) and a blurry CAM of it: 1 inside, fading to 0.2 at 6 positions
    from the centre, 0 beyond."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing='ij')
    centre = torch.randint(5, 11, (n, 2), generator=generator).float()
    dist = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2).sqrt()
    disc = F.interpolate((dist <= 3.5).float()[:, None], size=64, mode='bilinear').expand(-1, 3, -1, -1)
    images = disc * 1.4 - 0.8 + 0.1 * torch.randn(disc.shape, generator=generator)
    return images, dist, (1 - (dist - 3.5).clamp(min=0) / 3).clamp(0, 1) * (dist <= 6)


@pytest.mark.slow
def test_the_boundary_branch_learns_the_class_edge_from_the_pairs_and_the_walk_keeps_inside_it():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = boundary_network(argparse.Namespace(encoder='scratch', img_ch=3, ch=8, is_train=True))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(60):
        images, _, cam = _discs(generator, 4)
        labels = relation_labels(seed_labels(cam, fg_threshold=0.99, bg_threshold=0.05), radius=3)
        bg_pos, fg_pos, neg = boundary_losses(path_max_affinity(net(images), 3), labels)
        total = ((bg_pos + fg_pos) / 2 + neg) / 2
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert totals[-1] < totals[0] / 5, totals
    images, dist, cam = _discs(generator, 6)
    with torch.no_grad():
        boundary = net.eval()(images)
    edge, inside, outside = (dist > 3) & (dist < 6.5), dist < 2, dist > 7  # edge: the uncertain band
    assert boundary[edge].mean() > 10 * max(boundary[inside].mean(), boundary[outside].mean())
    seeds = torch.where(dist < 2, 1.0, 0.0)  # seeds inside alone: the walk must fill the disc, not the image
    walked = boundary_random_walk(seeds, boundary, radius=2.5, beta=10, lengths=(256,))[256]
    assert walked[dist < 3].mean() > 5 * walked[outside].mean()


def test_the_pretrained_boundary_network_is_frozen_and_gives_a_stride_4_map_in_every_precision():
    net = boundary_network(argparse.Namespace(encoder='efficientnet-lite0', is_train=False, img_ch=3, ch=8))
    trained = {name.split('.')[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trained == {'project', 'head'}
    with torch.no_grad():
        boundary = net.train()(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert boundary.shape == (2, 16, 16) and 0 <= boundary.min() and boundary.max() <= 1
    assert not net.encoder.training
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # --amp bf16 resizes every level too
        assert net(torch.zeros(1, 3, 64, 64)).dtype == torch.float32


def test_a_missing_or_wrong_cam_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r'^error: --model irn needs --irn_cam_weights FILE: pass a checkpoint'):
        load_frozen_cam('', 'cpu')
    with pytest.raises(SystemExit, match=r'^error: --irn_cam_weights no/such.pt not found; pass a checkpoint'):
        load_frozen_cam('no/such.pt', 'cpu')
    other = tmp_path / 'seg.pt'
    torch.save({'format': CHECKPOINT_FORMAT, 'architecture': {'model': 'seg'}, 'nets': {}}, other)
    with pytest.raises(SystemExit, match=r'holds a --model seg file, not a CAM; pass a checkpoint of a --model cam'):
        load_frozen_cam(str(other), 'cpu')


def test_irn_trains_on_a_cam_checkpoint_and_test_serves_it(tiny_argv, tiny_test_argv, tiny_test_opt, run_folder,
                                                          tmp_path, monkeypatch):
    assert train.main(tiny_argv('--model', 'cam', '--iteration', 2, name='cam')) == 0
    monkeypatch.chdir(tmp_path)
    cam_file = os.path.relpath(os.path.join(run_folder('cam'), 'checkpoints', 'iter_0000002.pt'))
    assert train.main(tiny_argv('--model', 'irn', '--irn_cam_weights', cam_file, '--iteration', 2,
                                '--irn_steps', 16, name='irn')) == 0
    path = os.path.join(run_folder('irn'), 'checkpoints', 'iter_0000002.pt')
    state = torch.load(path, weights_only=True)
    assert state['options']['irn_cam_weights'] == cam_file  # as given: relative
    assert state['architecture'] == {'model': 'irn', 'img_size': 32, 'img_ch': 3, 'ch': 4, 'irn_cam_ch': 4,
                                     'irn_cam_encoder': 'scratch', 'irn_radius': 5, 'irn_beta': 10, 'irn_steps': 16}
    assert list(state['nets']) == ['classifier', 'boundary'] and list(state['optimizers']) == ['irn']
    cam_state = torch.load(cam_file, weights_only=True)
    assert all(torch.equal(value, cam_state['nets']['classifier'][key])
               for key, value in state['nets']['classifier'].items())  # the CAM stayed frozen
    with pytest.raises(SystemExit, match='holds a --model irn file, not a CAM'):
        train.main(tiny_argv('--model', 'irn', '--irn_cam_weights', path, name='irn2'))

    model = load_model(tiny_test_opt(name='irn'), path)
    out = model.infer(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert set(out['maps']) == {'cam', 'irn', 'irn-t4', 'irn-t16', 'irn-t64'} and out['boundary'].shape == (2, 32, 32)
    assert all(m.shape == (2, 32, 32) and 0 <= m.min() and m.max() <= 1 for m in out['maps'].values())

    test_script.main(tiny_test_argv(name='irn'))
    with open(os.path.join(run_folder('irn'), 'test', 'testA', 'summary.json')) as handle:
        summary = json.load(handle)
    assert summary['selection']['map_mode'] in IRNModel.map_modes and 0 <= summary['DI'] <= 1
