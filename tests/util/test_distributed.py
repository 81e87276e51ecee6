"""Multi-process training: train.py under torchrun with DistributedDataParallel, gloo on CPU, 2 processes
talking over 127.0.0.1, compared with one process on the same global batch.

Starting processes is the slow part, so one 2-process run is shared by most tests. Run by torchrun as a
script, this file is that run's worker: it trains through ``train.main`` and records, per rank, a digest
of all weights and buffers after every step, every file it creates or changes (through an audit hook),
its exit code and whether it left the process group. Rank 1 alone is sent SIGTERM, as torchrun sends it
to a worker's whole process group, at the start of step 3 of a 4-step schedule (before it loads the batch
from its data loader worker).
"""
import argparse
import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

# Three levels up: this file also runs as torchrun's worker script, where conftest is not importable.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STOP_STEP = 3  # rank 1 is signalled at the start of this step of --iteration 4
# Per-process batch 2 against one process with batch 4 (the same global batch: the StepSampler gives rank r
# the items r*2, r*2+1 of every step's 4). Not batch 1 against 2: for a batch of one channels-last sample
# whose incoming gradient is channels-last too, torch 2.14's CPU instance norm returns wrong input
# gradients, with or without DDP, so the generators' gradients of a batch of 1 differ from the batch's share.
PER_PROCESS_BATCH, WORLD = 2, 2


def _digest(model):
    """SHA-256 of every network's parameters and buffers (spectral-norm u/v included), in a fixed order."""
    from models.base_model import _unwrap
    digest = hashlib.sha256()
    for name in model.model_names:
        for key, tensor in sorted(_unwrap(getattr(model, name)).state_dict().items()):
            digest.update(f'{name}.{key}'.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _writes_under(roots, event, args):
    """The path an audited ``event`` creates or changes under one of ``roots``, else None."""
    if event == 'open':
        path, mode, flags = args
        writing = any(c in mode for c in 'wax+') if isinstance(mode, str) else \
            bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if not writing:
            return None
    elif event in ('os.mkdir', 'os.rename', 'os.replace', 'os.remove', 'os.rmdir', 'os.truncate', 'os.chmod'):
        path = args[1] if event in ('os.rename', 'os.replace') else args[0]
    else:
        return None
    if not isinstance(path, (str, bytes, os.PathLike)):
        return None
    path = os.path.abspath(os.fsdecode(path))
    return path if any(path == root or path.startswith(root + os.sep) for root in roots) else None


def worker(report_dir, watch, argv):
    """One rank of the shared run: train with spies, then write ``report_dir/rank<R>.json``."""
    import torch.distributed as dist

    import train
    from models.cltnet_model import CLTNetModel

    rank = int(os.environ['RANK'])
    roots = [os.path.abspath(root) for root in watch]
    writes = []
    def audit(event, args):
        path = _writes_under(roots, event, args)
        if path:
            writes.append(path)
    sys.addaudithook(audit)
    digests = []
    original_step, original_lr = CLTNetModel.optimize_parameters, CLTNetModel.set_learning_rate

    def set_learning_rate(model, step):
        if rank == 1 and step == STOP_STEP:
            # Before the step fetches its batch, as torchrun does it: to the whole process group, which
            # torchrun gives each worker (a session of its own), so this reaches rank 1 alone.
            assert os.getpgid(0) == os.getpid()
            os.killpg(os.getpgid(0), signal.SIGTERM)
        original_lr(model, step)

    def optimize_parameters(model):
        original_step(model)
        digests.append(_digest(model))
    CLTNetModel.set_learning_rate, CLTNetModel.optimize_parameters = set_learning_rate, optimize_parameters
    code = train.main(argv)
    report = {'code': code, 'digests': digests, 'writes': writes, 'left_group': not dist.is_initialized()}
    with open(os.path.join(report_dir, f'rank{rank}.json'), 'w') as handle:
        json.dump(report, handle)


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _train_argv(dataroot, result_dir, name, *extra):
    from conftest import TINY_DATASET, TINY_FLAGS, TINY_FOLDER
    # No lr decay: the 2-process run (stopped at step 3 of 4) and the 1-process runs share one schedule.
    return ['--dataroot', dataroot, '--dataset', TINY_DATASET, '--folder', TINY_FOLDER, '--result_dir',
            str(result_dir), '--name', name, *TINY_FLAGS, '--decay_flag', 'False', *map(str, extra)]


def _run_folder(result_dir, name):
    from conftest import TINY_DATASET, TINY_FOLDER
    return os.path.join(str(result_dir), TINY_DATASET, TINY_FOLDER, name)


def _read_log(folder):
    with open(os.path.join(folder, 'loss_log.csv'), newline='') as handle:
        rows = list(csv.reader(handle))
    return rows[0], [[float(v) for v in row] for row in rows[1:]]


def _nets(folder, step):
    path = os.path.join(folder, 'checkpoints', f'iter_{step:07d}.pt')
    return torch.load(path, map_location='cpu', weights_only=False)['nets']


@pytest.fixture(scope='module')
def two_processes(tiny_dataroot, tmp_path_factory):
    """The shared run: torchrun, 2 processes, per-process batch 2, one data loader worker each."""
    root = tmp_path_factory.mktemp('ddp')
    results, reports = root / 'results', root / 'reports'
    reports.mkdir()
    argv = _train_argv(tiny_dataroot, results, 'ddp', '--batch_size', PER_PROCESS_BATCH, '--iteration', 4,
                       '--save_freq', 2, '--print_freq', 2, '--display_freq', 1, '--num_workers', 1)
    env = dict(os.environ, PYTHONPATH=REPO, MASTER_ADDR='127.0.0.1', OMP_NUM_THREADS='1')
    if os.path.isdir('/sys/class/net/lo'):
        env['GLOO_SOCKET_IFNAME'] = 'lo'  # keep gloo's own connections on the loopback interface too
    command = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={WORLD}',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', os.path.abspath(__file__),
               '--report_dir', str(reports), '--watch', str(results), tiny_dataroot, '--', *argv]
    run = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=180)  # about 15 s when all is well
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: torchrun passes it on to its workers (each in a session of its own), then
        # kills them; killed outright, it would leave them behind, stuck in a collective.
        run.terminate()
        stdout, stderr = run.communicate(timeout=60)
        pytest.fail('the 2-process run hung (ranks waiting in different collectives?):\n'
                    + stdout[-4000:] + stderr[-4000:])
    assert run.returncode == 0, stdout[-4000:] + stderr[-4000:]
    ranks = []
    for rank in range(WORLD):
        with open(reports / f'rank{rank}.json') as handle:
            ranks.append(json.load(handle))
    return {'ranks': ranks, 'folder': _run_folder(results, 'ddp'), 'stdout': stdout, 'dataroot': tiny_dataroot}


@pytest.fixture(scope='module')
def one_process(tiny_dataroot, tmp_path_factory):
    """The same 4-step schedule in one process (in this one) on the same global batch: batch 4."""
    import train
    results = tmp_path_factory.mktemp('single') / 'results'
    assert train.main(_train_argv(tiny_dataroot, results, 'single', '--batch_size', PER_PROCESS_BATCH * WORLD,
                                  '--iteration', 4, '--save_freq', 1, '--display_freq', 1)) == 0
    return _run_folder(results, 'single')


@pytest.mark.slow
def test_ranks_hold_identical_weights_after_every_step(two_processes):
    rank0, rank1 = two_processes['ranks']
    assert len(rank0['digests']) == STOP_STEP
    assert rank0['digests'] == rank1['digests']  # bit for bit, spectral-norm buffers included
    assert len(set(rank0['digests'])) == STOP_STEP  # and the weights did move at every step


@pytest.mark.slow
def test_only_rank_0_writes_files(two_processes):
    rank0, rank1 = two_processes['ranks']
    assert rank1['writes'] == []
    folder = two_processes['folder']
    written = {os.path.relpath(path, folder) for path in rank0['writes'] if not path.endswith('.tmp')}
    assert {'opt.txt', 'loss_log.csv', os.path.join('checkpoints', 'iter_0000002.pt'),
            os.path.join('checkpoints', 'iter_0000003.pt'), os.path.join('samples', 'step_0000002.png')} <= written
    with open(os.path.join(folder, 'opt.txt')) as handle:
        assert ' world_size: 2\n' in handle.read()


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_that_step_after_rank_0_saved(two_processes):
    for report in two_processes['ranks']:
        assert report['code'] == 128 + signal.SIGTERM
        assert report['left_group']  # destroy_process_group ran on the way out
    folder = two_processes['folder']
    assert sorted(os.listdir(os.path.join(folder, 'checkpoints'))) == ['iter_0000002.pt', 'iter_0000003.pt']
    assert [row[0] for row in _read_log(folder)[1]] == [1, 2, 3]
    assert f'stopped by signal {int(signal.SIGTERM)} at step {STOP_STEP}' in two_processes['stdout']


# A fifth of one Adam step (lr 1e-4): far below a wrong gradient, above batch-order rounding.
WEIGHT_ATOL = 2e-5


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(two_processes, one_process):
    header, ddp_rows = _read_log(two_processes['folder'])
    single_header, single_rows = _read_log(one_process)
    assert header == single_header
    # The logged losses are the means over the ranks: those of one process on the whole global batch.
    torch.testing.assert_close(torch.tensor(ddp_rows), torch.tensor(single_rows[:STOP_STEP]), rtol=1e-5, atol=1e-6)
    ddp, single = _nets(two_processes['folder'], STOP_STEP), _nets(one_process, STOP_STEP)
    for name, net in single.items():
        for key, tensor in net.items():
            # Adam moves each weight by about lr (1e-4) per step; any gradient error would show at that
            # scale. group_norm reduces in a batch-size-dependent order, and Adam turns those float
            # rounding differences into update differences of a few percent of one step.
            assert torch.allclose(ddp[name][key], tensor, rtol=0, atol=WEIGHT_ATOL), f'{name}.{key}'


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(two_processes, one_process, tmp_path, capsys):
    import train
    results = tmp_path / 'results'
    shutil.copytree(two_processes['folder'], _run_folder(results, 'resumed'))
    argv = _train_argv(two_processes['dataroot'], results, 'resumed', '--batch_size', PER_PROCESS_BATCH * WORLD,
                       '--iteration', 4, '--save_freq', 1, '--display_freq', 1, '--resume', 'True')
    assert train.main(argv) == 0
    assert 'iter_0000003.pt (step 3)' in capsys.readouterr().out
    folder = _run_folder(results, 'resumed')
    assert [row[0] for row in _read_log(folder)[1]] == [1, 2, 3, 4]
    # The same global batch per step, so the run goes on exactly as the 1-process one did.
    resumed, single = _nets(folder, 4), _nets(one_process, 4)
    for name, net in single.items():
        for key, tensor in net.items():
            assert torch.allclose(resumed[name][key], tensor, rtol=0, atol=WEIGHT_ATOL), f'{name}.{key}'


def test_without_torchrun_every_helper_is_a_plain_single_process_call():
    from util import distributed
    assert 'WORLD_SIZE' not in os.environ and distributed.init('cpu') == 'cpu'
    assert not distributed.is_distributed() and distributed.is_main()
    assert (distributed.world_size(), distributed.rank(), distributed.max_over_ranks(15)) == (1, 0, 15)
    state = {'weights': torch.ones(2)}
    assert distributed.broadcast_state(state) is state
    assert distributed.mean_over_ranks(state['weights']) is state['weights']
    with pytest.raises(SystemExit, match='bad layout'):
        distributed.from_main(lambda: sys.exit('bad layout'))
    distributed.barrier()
    distributed.destroy()


def test_start_train_uses_torchrun_when_nproc_is_above_1(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    script = os.path.join(REPO, 'start_train.sh')
    ran = {n: subprocess.run(['bash', script, '--iteration', '5'], env=dict(env, NPROC=n), capture_output=True,
                             text=True, check=True).stdout.split() for n in ('1', '2')}
    assert ran['1'][0] == 'train.py' and ran['1'][-2:] == ['--iteration', '5']
    assert ran['2'][:3] == ['-m', 'tools.torchrun_local', '--nproc_per_node=2']
    assert ran['2'][3:] == ran['1']


def test_help_says_the_batch_size_is_per_process():
    from options.train_options import TrainOptions
    text = ' '.join(TrainOptions().build_parser().format_help().split())
    assert 'per process' in text[text.index('--batch_size BATCH_SIZE '):][:200]  # its entry (usage has 'BATCH_SIZE]')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='worker of the shared 2-process run (started by torchrun)')
    parser.add_argument('--report_dir', required=True)
    parser.add_argument('--watch', nargs='+', required=True, help='folders whose changes are recorded')
    args, rest = parser.parse_known_args()
    worker(args.report_dir, args.watch, [a for a in rest if a != '--'])
    sys.exit(0)  # the exit code of train.main is in the report; torchrun must not stop the other rank
