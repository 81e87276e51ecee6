"""End-to-end tests of train.py on the tiny dataset: outputs, resume, layout errors, NaN stop, visdom."""
import csv
import os

import pytest
import torch
from PIL import Image

import train
from models.cltnet_model import CLTNetModel
from reporting.sample_grid import LABEL_BAND_PX
from reporting.visualizer import Visualizer
from conftest import traces, wait_until

# visdom 0.2.4 itself calls the deprecated logger.warn.
pytestmark = pytest.mark.filterwarnings('ignore:The .warn. method is deprecated:DeprecationWarning')


def read_log(folder):
    with open(os.path.join(folder, 'loss_log.csv'), newline='') as f:
        return list(csv.reader(f))


def checkpoints(folder):
    return sorted(os.listdir(os.path.join(folder, 'checkpoints')))


def load(folder, step):
    return torch.load(os.path.join(folder, 'checkpoints', f'iter_{step:07d}.pt'), weights_only=False)


@pytest.fixture
def step_spy(monkeypatch):
    """Wraps CLTNetModel.optimize_parameters; ``spy.rng`` holds the global torch RNG state at each call,
    ``spy.fail_at`` (a call number) raises there, ``spy.nan_at`` (call number, loss) poisons that loss."""
    original = CLTNetModel.optimize_parameters

    class Spy:
        def __init__(self):
            self.reset()

        def reset(self):
            self.rng, self.fail_at, self.nan_at = [], None, None

    spy = Spy()

    def optimize_parameters(model):
        spy.rng.append(torch.get_rng_state())
        if spy.fail_at == len(spy.rng):
            raise RuntimeError('simulated crash')
        original(model)
        if spy.nan_at and spy.nan_at[0] == len(spy.rng):
            setattr(model, 'loss_' + spy.nan_at[1], torch.tensor(float('nan')))
    monkeypatch.setattr(CLTNetModel, 'optimize_parameters', optimize_parameters)
    return spy


def test_run_writes_options_loss_log_checkpoints_and_samples(tiny_argv, run_folder, capsys):
    assert train.main(tiny_argv('--iteration', 4, '--save_freq', 2, '--print_freq', 2,
                                '--display_freq', 3)) == 0
    folder = run_folder()
    with open(os.path.join(folder, 'opt.txt')) as f:
        text = f.read()
    assert ' iteration: 4\n' in text and ' img_size: 32\n' in text
    rows = read_log(folder)
    assert rows[0] == ['step'] + CLTNetModel.loss_names
    assert [int(row[0]) for row in rows[1:]] == [1, 2, 3, 4]  # one row per step, also between flushes
    assert all(torch.isfinite(torch.tensor([float(v) for v in row[1:]])).all() for row in rows[1:])

    assert checkpoints(folder) == ['iter_0000002.pt', 'iter_0000004.pt']
    state = load(folder, 4)
    assert state['step'] == 4 and state['options']['iteration'] == 4
    assert set(state['nets']) == set(CLTNetModel.model_names) and set(state['optimizers']) == {'G', 'D'}
    assert isinstance(state['rng']['torch'], torch.Tensor)  # RNG state saved for resuming

    samples = sorted(os.listdir(os.path.join(folder, 'samples')))
    assert samples == ['step_0000002.png', 'step_0000004.png']
    tiles = len(CLTNetModel.visual_names)
    width, height = Image.open(os.path.join(folder, 'samples', samples[-1])).size
    assert width >= tiles * (32 + 4) and height == LABEL_BAND_PX + 32 + 4  # the tiles under their names
    assert 'done: 4 steps' in capsys.readouterr().out


@pytest.mark.slow
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tiny_argv, run_folder, step_spy, capsys):
    # --decay_flag stays on: the interrupted run has the same schedule, so even the lr must line up.
    flags = ('--iteration', 4, '--save_freq', 2, '--display_freq', 1)
    train.main(tiny_argv(*flags, name='straight'))
    straight_rng = step_spy.rng

    step_spy.reset()
    step_spy.fail_at = 3  # a crash during step 3: the last checkpoint is step 2
    with pytest.raises(RuntimeError, match='simulated crash'):
        train.main(tiny_argv(*flags, name='split'))
    assert checkpoints(run_folder('split')) == ['iter_0000002.pt']
    step_spy.reset()
    assert train.main(tiny_argv(*flags, '--resume', 'True', name='split')) == 0
    assert 'iter_0000002.pt (step 2)' in capsys.readouterr().out
    assert len(step_spy.rng) == 2  # steps 3 and 4 only

    straight, resumed = load(run_folder('straight'), 4), load(run_folder('split'), 4)
    for key in ('architecture', 'step'):
        assert straight[key] == resumed[key]
    assert straight['nets'].keys() == resumed['nets'].keys()
    for name, net in straight['nets'].items():
        for key, tensor in net.items():
            assert torch.equal(tensor, resumed['nets'][name][key]), f'{name}.{key}'
    for name, optimizer in straight['optimizers'].items():
        assert optimizer['param_groups'] == resumed['optimizers'][name]['param_groups']
        for index, slots in optimizer['state'].items():
            for slot, value in slots.items():
                assert torch.equal(value, resumed['optimizers'][name]['state'][index][slot]), (name, slot)
    # The global RNG follows the same stream too (for any stochastic layer a model may use).
    for step, (a, b) in enumerate(zip(straight_rng[2:], step_spy.rng), start=3):
        assert torch.equal(a, b), f'global RNG differs at step {step}'
    assert torch.equal(straight['rng']['torch'], resumed['rng']['torch'])
    assert read_log(run_folder('straight')) == read_log(run_folder('split'))


@pytest.mark.slow
def test_resume_with_more_iterations_continues_at_the_next_step(tiny_argv, run_folder, step_spy, capsys):
    # Without lr decay the schedule does not depend on --iteration, so extending a finished run by
    # one step equals a 3-step run (with decay, the lr of steps 2-3 differs by design).
    flags = ('--save_freq', 2, '--display_freq', 1, '--decay_flag', 'False')
    train.main(tiny_argv('--iteration', 3, *flags, name='straight'))
    train.main(tiny_argv('--iteration', 2, *flags))
    step_spy.reset()
    train.main(tiny_argv('--iteration', 3, *flags, '--resume', 'True'))
    assert 'resumed from' in capsys.readouterr().out and len(step_spy.rng) == 1
    folder = run_folder()
    assert [int(row[0]) for row in read_log(folder)[1:]] == [1, 2, 3]
    assert checkpoints(folder) == ['iter_0000002.pt', 'iter_0000003.pt']
    resumed, straight = load(folder, 3), load(run_folder('straight'), 3)
    assert resumed['step'] == 3
    for name, net in straight['nets'].items():
        for key, tensor in net.items():
            assert torch.equal(tensor, resumed['nets'][name][key]), f'{name}.{key}'

    step_spy.reset()
    train.main(tiny_argv('--iteration', 3, '--resume', 'True'))
    assert 'nothing to do' in capsys.readouterr().out and step_spy.rng == []


def test_resume_falls_back_past_an_unreadable_checkpoint(tiny_argv, run_folder, step_spy, capsys):
    train.main(tiny_argv('--iteration', 2, '--save_freq', 1))
    with open(os.path.join(run_folder(), 'checkpoints', 'iter_0000002.pt'), 'wb') as f:
        f.write(b'truncated')
    step_spy.reset()
    train.main(tiny_argv('--iteration', 2, '--save_freq', 1, '--resume', 'True'))
    out = capsys.readouterr().out
    assert 'iter_0000002.pt: cannot be read' in out and 'iter_0000001.pt (step 1)' in out
    assert len(step_spy.rng) == 1 and load(run_folder(), 2)['step'] == 2


def test_resume_refuses_a_checkpoint_of_another_architecture(tiny_argv, run_folder):
    train.main(tiny_argv('--iteration', 1))
    with pytest.raises(SystemExit) as info:
        train.main(tiny_argv('--iteration', 2, '--ch', 8, '--resume', 'True'))
    message = str(info.value.code)
    assert 'iter_0000001.pt' in message and '--ch 4 (checkpoint) vs 8 (now)' in message


def _layout_error(argv):
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    lines = str(info.value.code).splitlines()
    assert lines[0].startswith('error: ') and 'layout problem' in lines[0]
    return lines


def test_missing_dataroot_is_reported_before_training(tiny_argv, tmp_path, run_folder):
    missing = str(tmp_path / 'no_such_root')
    lines = _layout_error(tiny_argv('--dataroot', missing))
    problems = [line for line in lines if line.startswith('  ')]
    assert len(problems) == 1 and problems[0].strip().startswith(missing + ': ') and '--dataroot' in problems[0]
    assert not os.path.exists(run_folder())  # nothing written before the data are known to be good


def test_unknown_dataset_names_the_path_and_the_existing_ones(tiny_argv, tiny_dataroot):
    lines = _layout_error(tiny_argv('--dataset', 'ISIC'))
    problem = [line for line in lines if line.startswith('  ')]
    assert len(problem) == 1
    assert os.path.join(tiny_dataroot, 'ISIC') in problem[0] and 'tiny' in problem[0]


def test_every_layout_problem_gets_its_own_line(tiny_argv, tmp_path):
    root = tmp_path / 'broken'
    (root / 'ds' / 'f1' / '3_A_weak').mkdir(parents=True)
    (root / 'ds' / 'f1' / '3_A_weak' / 'bad.png').write_bytes(b'not a png')
    (root / 'ds' / 'f1' / '3_A_weak' / 'also_bad.png').write_bytes(b'')
    lines = _layout_error(tiny_argv('--dataroot', root, '--dataset', 'ds', '--folder', 'f1'))
    problems = [line.strip() for line in lines if line.startswith('  ')]
    assert len(problems) == 4, lines
    folder = str(root / 'ds' / 'f1')
    assert any(p.startswith(folder + ': ') and '_B_weak' in p for p in problems)  # missing B folder
    assert any(p.startswith(os.path.join(folder, '3_A_weak') + ': ') for p in problems)  # nothing readable
    for name in ('bad.png', 'also_bad.png'):
        assert any(p.startswith(os.path.join(folder, '3_A_weak', name) + ': ') for p in problems), name
    assert lines[0] == 'error: 4 dataset layout problems found:'


def test_a_nan_loss_stops_training_naming_loss_and_step(tiny_argv, run_folder, step_spy):
    step_spy.nan_at = (3, 'G_cycle')
    with pytest.raises(SystemExit) as info:
        train.main(tiny_argv('--iteration', 6, '--save_freq', 2, '--display_freq', 5))
    message = str(info.value.code)
    assert 'G_cycle' in message and 'nan' in message and 'step 3' in message
    assert len(step_spy.rng) == 4  # found at the flush of step 4, when checkpoint 4 would be written
    assert checkpoints(run_folder()) == ['iter_0000002.pt']
    assert [int(row[0]) for row in read_log(run_folder())[1:]] == [1, 2]  # no NaN row logged


@pytest.mark.slow
def test_losses_are_plotted_live_in_visdom(tiny_argv, run_folder, visdom_server, capsys):
    env = 'train_test'
    assert train.main(tiny_argv('--iteration', 3, '--display_id', 1, '--display_server', 'http://127.0.0.1',
                                '--display_port', visdom_server.port, '--display_env', env,
                                '--display_freq', 1, '--print_freq', 3)) == 0
    # Where to look, on a line of its own (above the progress bar, which shares stdout).
    lines = [line.rsplit('\r', 1)[-1] for line in capsys.readouterr().out.split('\n')]
    assert f'visdom: live loss plots and samples at http://127.0.0.1:{visdom_server.port}/env/{env}' in lines
    rows = read_log(run_folder())
    logged = {name: [float(row[i]) for row in rows[1:]] for i, name in enumerate(rows[0]) if i}
    last_group = list(CLTNetModel.loss_groups)[-1]
    assert wait_until(lambda: len(traces(visdom_server, last_group, env).get('G_total', ([],))[0]) == 3)
    for group, names in CLTNetModel.loss_groups.items():
        window = visdom_server.window(Visualizer.loss_window(group), env)
        assert window['title'] == group
        got = traces(visdom_server, group, env)
        assert list(got) == names
        for name in names:
            assert got[name][0] == [1.0, 2.0, 3.0]
            assert got[name][1] == pytest.approx(logged[name], rel=1e-6)
    image = wait_until(lambda: visdom_server.window(Visualizer.image_window, env))
    assert image['type'] == 'image'
