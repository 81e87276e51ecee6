"""Tests for reporting/visualizer.py against a real visdom server on 127.0.0.1."""
import base64
import csv
import io
import os
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import VisdomServer, free_port, traces, wait_until
from reporting.sample_grid import labelled_grid
from reporting.visualizer import Visualizer

# visdom 0.2.4 itself calls the deprecated logger.warn.
pytestmark = pytest.mark.filterwarnings('ignore:The .warn. method is deprecated:DeprecationWarning')

GROUPS = {'generators': ['G_A', 'G_B'], 'discriminators': ['D_A']}


def losses_at(step):
    return {'G_A': step * 0.5, 'G_B': step + 0.25, 'D_A': 1.0 / step}


@pytest.mark.slow
def test_losses_and_images_read_back_from_server(visdom_server, tmp_path):
    vis = Visualizer(str(tmp_path / 'run'), server='http://127.0.0.1', port=visdom_server.port, env='plot')
    for step in range(1, 5):
        vis.plot_losses(step, losses_at(step), GROUPS)
    visuals = {'real_A': torch.zeros(2, 3, 8, 10), 'lesion_map': torch.ones(2, 1, 8, 10)}
    vis.display_images(4, visuals)
    vis.close()

    assert wait_until(lambda: len(traces(visdom_server, 'generators', 'plot').get('G_A', ([], []))[0]) == 4)
    for group, names in GROUPS.items():
        window = visdom_server.window(Visualizer.loss_window(group), 'plot')
        assert window['title'] == group
        got = traces(visdom_server, group, 'plot')
        assert list(got) == names
        for name in names:
            assert got[name][0] == [1.0, 2.0, 3.0, 4.0]
            assert got[name][1] == pytest.approx([losses_at(s)[name] for s in range(1, 5)])

    image = wait_until(lambda: visdom_server.window(Visualizer.image_window, 'plot'))
    assert image['type'] == 'image'
    png = base64.b64decode(image['content']['src'].split(',', 1)[1])
    assert Image.open(io.BytesIO(png)).size == (2 * (10 + 4), 8 + 4)


@pytest.mark.slow
def test_connecting_says_once_where_the_plots_are(visdom_server, tmp_path, capsys):
    vis = Visualizer(str(tmp_path / 'run'), server='http://127.0.0.1', port=visdom_server.port, env='my run')
    for step in range(1, 4):
        vis.plot_losses(step, losses_at(step), GROUPS)
    vis.close()
    out = capsys.readouterr().out
    assert out == f'visdom: live loss plots and samples at http://127.0.0.1:{visdom_server.port}/env/my%20run\n'


def test_loss_log_has_step_first_and_one_row_per_step(tmp_path):
    vis = Visualizer(str(tmp_path), display_id=0)
    for step in (10, 20, 30):
        vis.log_losses(step, losses_at(step))
    vis.close()
    with open(tmp_path / 'loss_log.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['step', 'G_A', 'G_B', 'D_A']
    assert [int(r['step']) for r in rows] == [10, 20, 30]
    assert float(rows[1]['G_B']) == pytest.approx(20.25)


def test_resume_drops_rows_past_resume_step(tmp_path):
    vis = Visualizer(str(tmp_path), display_id=0)
    for step in range(1, 6):
        vis.log_losses(step, losses_at(step))
    vis.close()

    resumed = Visualizer(str(tmp_path), display_id=0, resume_step=3)
    for step in (4, 5, 6):
        resumed.log_losses(step, {'D_A': 0.0, 'G_B': 1.0, 'G_A': 2.0})  # a different key order
    resumed.close()
    with open(tmp_path / 'loss_log.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['step', 'G_A', 'G_B', 'D_A']
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    assert rows[4][1:] == ['2.0', '1.0', '0.0']
    assert sorted(os.listdir(tmp_path)) == ['loss_log.csv']  # no temp file left behind

    fresh = Visualizer(str(tmp_path), display_id=0)
    fresh.log_losses(1, losses_at(1))
    fresh.close()
    with open(tmp_path / 'loss_log.csv') as f:
        assert len(f.readlines()) == 2


def test_save_samples_writes_png_grid(tmp_path):
    vis = Visualizer(str(tmp_path), display_id=0)
    visuals = {'real_A': torch.full((2, 3, 16, 24), -1.0), 'fake_B': torch.ones(2, 3, 16, 24),
               'lesion_map': torch.zeros(2, 1, 16, 24)}
    path = vis.save_samples(7, visuals)
    assert path == str(tmp_path / 'samples' / 'step_0000007.png')
    assert os.listdir(tmp_path / 'samples') == ['step_0000007.png']
    image = Image.open(path)
    assert image.mode == 'RGB'
    assert np.array_equal(np.asarray(image), labelled_grid(visuals))  # each column named above its tile


def test_disabled_rank_writes_nothing(tmp_path):
    vis = Visualizer(str(tmp_path / 'run'), enabled=False, port=free_port())
    vis.log_losses(1, losses_at(1))
    vis.plot_losses(1, losses_at(1), GROUPS)
    vis.save_samples(1, {'real_A': torch.zeros(1, 3, 4, 4)})
    vis.close()
    assert not (tmp_path / 'run').exists()


def test_display_id_zero_makes_no_connection(tmp_path):
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        vis = Visualizer(str(tmp_path), display_id=0, server='http://127.0.0.1',
                         port=listener.getsockname()[1])
        vis.plot_losses(1, losses_at(1), GROUPS)
        vis.display_images(1, {'real_A': torch.zeros(1, 3, 4, 4)})
        vis.close()
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):
            listener.accept()


def test_unreachable_server_hints_once_and_never_blocks(tmp_path, capsys):
    vis = Visualizer(str(tmp_path), server='http://127.0.0.1', port=free_port())
    visuals = {'real_A': torch.zeros(1, 3, 32, 32)}
    start = time.monotonic()
    for step in range(1, 51):
        vis.log_losses(step, losses_at(step))
        vis.plot_losses(step, losses_at(step), GROUPS)
        vis.display_images(step, visuals)
    assert time.monotonic() - start < 2.0
    start = time.monotonic()
    vis.close()
    assert time.monotonic() - start < 3.0
    out = capsys.readouterr().out
    assert out.count('visdom server not reachable') == 1
    assert 'python -m visdom.server' in out and 'training continues' in out
    with open(tmp_path / 'loss_log.csv') as f:
        assert len(f.readlines()) == 51


@pytest.mark.slow
def test_plots_resume_after_server_restart(visdom_server, tmp_path):
    vis = Visualizer(str(tmp_path / 'run'), server='http://127.0.0.1', port=visdom_server.port, env='restart')
    for step in (1, 2):
        vis.plot_losses(step, losses_at(step), GROUPS)
    assert wait_until(lambda: len(traces(visdom_server, 'discriminators', 'restart').get('D_A', ([],))[0]) == 2)

    visdom_server.stop()
    start = time.monotonic()
    for step in range(3, 23):
        vis.plot_losses(step, losses_at(step), GROUPS)
    assert time.monotonic() - start < 2.0

    # A fresh env folder: the new server knows no windows, so they must be re-created.
    restarted = VisdomServer(visdom_server.port, visdom_server.env_path + '_2')
    restarted.start()
    try:
        def last_step_arrived():
            vis.plot_losses(30, losses_at(30), GROUPS)
            return 30.0 in traces(restarted, 'discriminators', 'restart').get('D_A', ([],))[0]
        assert wait_until(last_step_arrived, timeout_s=20)
        window = restarted.window(Visualizer.loss_window('generators'), 'restart')
        assert [t['name'] for t in window['content']['data']] == ['G_A', 'G_B']
    finally:
        vis.close()
        restarted.stop()


def test_runs_of_one_name_on_other_data_plot_into_their_own_environments(tmp_path):
    """Issue 42 item 15: the demo's and ISIC's 'cltnet' runs shared one visdom environment (the run name)."""
    from options.train_options import TrainOptions

    def env(*argv):
        return TrainOptions().parse(['--result_dir', str(tmp_path), '--device', 'cpu', *argv]).display_env
    assert env('--dataset', 'demo', '--name', 'cltnet') == 'demo_demo_1_cltnet'
    assert env('--dataset', 'ISIC', '--name', 'cltnet') == 'ISIC_isic_1_cltnet'
    assert env('--dataset', 'ISIC', '--folder', 'isic_2', '--name', 'cltnet') == 'ISIC_isic_2_cltnet'
    assert env('--dataset', 'ISIC', '--name', 'cltnet', '--display_env', 'mine') == 'mine'  # the override
