"""Tests of tools/speed_benchmark.py (and its --speed entry in tools/benchmark.py) on tiny settings, and of
the --reuse_fakes / --compile options it compares. No timing is asserted: only that every figure exists.
Each path, and each train.py / test.py of the quality check, runs in its own process."""
import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, TINY_DATASET, help_text
from models import create_model
from models.base_model import amp_dtype
from tools import benchmark, speed_benchmark

TINY = ['--img_size', '32', '--ch', '8', '--n_res', '1', '--batch_size', '1', '--iters', '2', '--warmup', '1',
        '--num_threads', '1', '--device', 'cpu', '--crf_images', '2']
GLIBC = platform.libc_ver()[0] == 'glibc'  # where --keep_freed_memory can take effect


# The speed figures and the quality check are separate fixtures: each starts several interpreters.
@pytest.fixture(scope='module')
def speed(tmp_path_factory):
    """speed_benchmark.main on tiny settings; ``speed.report`` is what it returned, ``speed.json`` what it
    wrote."""
    path = tmp_path_factory.mktemp('speed') / 'speed.json'
    report = speed_benchmark.main(TINY + ['--json', path])
    with open(path) as handle:
        return argparse.Namespace(report=report, json=json.load(handle))


@pytest.fixture(scope='module')
def quality(tiny_dataroot):
    """The 2-step quality check on the tiny dataset (train.py and test.py of each path)."""
    return speed_benchmark.quality(speed_benchmark.parse(TINY + ['--quality', '2', '--dataroot', tiny_dataroot,
                                                                '--dataset', TINY_DATASET]))


@pytest.mark.slow
def test_json_holds_every_figure_of_both_paths(speed):
    report = speed.json
    assert report == json.loads(json.dumps(speed.report))
    assert report['torch'] == torch.__version__ and 'logical cores' in report['machine']
    assert report['setting'] == dict(preset='cpu', img_size=32, ch=8, n_res=1, light=True, batch_size=1,
                                     device='cpu', threads=1)
    assert list(report['paths']) == ['fast', 'plain']
    for result in report['paths'].values():
        timing = result['train_seconds']
        assert len(timing['all']) == 2 and timing['min'] <= timing['median'] <= timing['max']
        assert result['peak_rss_mb'] > 0 and result['infer_images_per_second'] > 0
        assert result['page_faults_per_iteration'] >= 0
        assert len(result['infer_seconds']['all']) == 2
        assert result['losses'] and all(math.isfinite(v) for v in result['losses'].values())
    assert set(report['plain_over_fast']) == {'train_seconds', 'infer_seconds', 'peak_rss'}
    assert all(ratio > 0 for ratio in report['plain_over_fast'].values())
    crf = report['crf']
    assert (crf['images'], crf['workers'], crf['img_size']) == (2, 2, 32) and crf['images_per_second'] > 0


@pytest.mark.slow
def test_plain_path_is_fp32_contiguous_without_reuse_and_fast_path_is_the_default(speed):
    fast, plain = speed.json['paths']['fast'], speed.json['paths']['plain']
    assert (plain['amp'], plain['output_dtype'], plain['channels_last'], plain['reuse_fakes'], plain['compile'],
            plain['recompute'], plain['keep_freed_memory']) == ('float32', 'float32', False, False, False, False, False)
    expected = str(amp_dtype('auto', 'cpu') or torch.float32).replace('torch.', '')
    assert (fast['amp'], fast['output_dtype'], fast['channels_last'], fast['reuse_fakes'], fast['compile'],
            fast['recompute'], fast['keep_freed_memory']) == (expected, expected, True, True, False, False, GLIBC)


@pytest.mark.slow
def test_quality_check_trains_both_paths_and_compares_val_dice(quality):
    assert (quality['iterations'], quality['dataset']) == (2, TINY_DATASET)
    dice = quality['val_DI']
    assert set(dice) == {'fast', 'plain'} and all(0 <= d <= 1 for d in dice.values())
    assert quality['difference'] == pytest.approx(dice['plain'] - dice['fast'])


@pytest.mark.slow
def test_printed_report_names_every_figure(speed, quality, capsys):
    assert 'quality' not in speed.report  # no --quality
    print(speed_benchmark.format_report(dict(speed.report, quality=quality)))
    out = capsys.readouterr().out
    for text in ('32 px, ch 8, n_res 1', 'torch ' + torch.__version__, 'machine: ', 'peak RSS', 'infer img/s',
                 'plain / fast: training time', 'CRF: ', 'quality after 2 steps', 'difference'):
        assert text in out, text
    rows = [line.split()[:2] for line in out.splitlines() if re.match(r'(fast|plain) +\w+ +(True|False) ', line)]
    assert rows == [['fast', speed.report['paths']['fast']['amp']], ['plain', 'float32']]


@pytest.mark.slow
def test_quality_check_stops_with_one_line_when_a_script_fails(tmp_path):
    with pytest.raises(SystemExit) as info:
        speed_benchmark.main(TINY + ['--paths', 'fast', '--crf_images', '0', '--quality', '2',
                                     '--dataroot', tmp_path, '--dataset', 'missing'])
    assert info.value.code == 'speed benchmark: train.py of the fast path stopped (1)'


def _generator_passes(model, batch):
    """Forward passes of the two generators during one optimize_parameters()."""
    calls = []
    hooks = [g.register_forward_hook(lambda *_: calls.append(1)) for g in (model.G_AB, model.G_BA)]
    model.set_input(batch)
    model.optimize_parameters()
    for hook in hooks:
        hook.remove()
    return len(calls)


def test_reuse_fakes_false_runs_the_generators_again_for_the_discriminator_step(tiny_opt):
    gen = torch.Generator().manual_seed(1)
    batch = {'A': torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1, 'B': torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1}
    models = {}
    for reuse in (True, False):
        torch.manual_seed(0)
        models[reuse] = create_model(tiny_opt('--reuse_fakes', str(reuse)))
    # Per generator: the translation pass, then its cycle and identity passes as one batch.
    assert _generator_passes(models[True], batch) == 4
    assert _generator_passes(models[False], batch) == 6
    assert all(torch.isfinite(v) for v in models[False].get_current_losses().values())
    # The generator steps are the same computation; only the fakes the discriminators judge differ.
    same, fresh = models[True], models[False]
    for name in ('G_AB', 'G_BA'):
        for a, b in zip(getattr(same, name).parameters(), getattr(fresh, name).parameters()):
            assert torch.equal(a, b), name
    assert torch.equal(same.loss_G_total, fresh.loss_G_total)
    assert not torch.equal(same.loss_D_A, fresh.loss_D_A)


def test_options_default_to_the_fast_path(tiny_opt):
    opt = tiny_opt()
    assert opt.reuse_fakes is True and opt.compile is False


@pytest.mark.slow
def test_compile_without_a_compiler_stops_with_one_line(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / 'no-such-compiler'), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / 'cache'))
    done = subprocess.run([sys.executable, '-m', 'tools.speed_benchmark', *TINY,
                           '--paths', 'fast', '--compile', 'True', '--crf_images', '0'],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: --compile')]
    assert len(errors) == 1 and errors[0] == done.stderr.rstrip().splitlines()[-1]
    assert errors[0].startswith('error: --compile True, but torch.compile does not work on this machine (')
    assert 'C++ compiler' in errors[0] and errors[0].endswith('; use --compile False')


def test_benchmark_speed_flag_dispatches_to_the_speed_benchmark(monkeypatch):
    seen = []
    monkeypatch.setattr(speed_benchmark, 'main', lambda argv: seen.append(argv) or {'ok': True})
    assert benchmark.main(['--speed', '--preset', 'paper', '--iters', '12']) == {'ok': True}
    assert seen == [['--preset', 'paper', '--iters', '12']]


@pytest.mark.parametrize('main', [benchmark.main, speed_benchmark.main])
def test_help_explains_every_speed_flag(main, capsys):
    out = help_text(capsys, main)
    assert 'plain' in out and 'fast' in out
    for action in speed_benchmark.build_parser()._actions:
        if action.help == argparse.SUPPRESS:
            assert action.option_strings == ['--_worker']
            continue
        assert action.help, action.option_strings
        assert all(flag in out for flag in action.option_strings), action.option_strings
    if main is benchmark.main:
        assert 'With --speed, tools/speed_benchmark.py runs instead' in out


@pytest.mark.parametrize('argv, expected', [(['--paths', 'fast,slow'], "--paths: expected fast and/or plain"),
                                            (['--iters', '0'], '--iters must be at least 1, got 0')])
def test_bad_values_exit_with_a_message(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        speed_benchmark.main(argv)
    assert info.value.code == 2 and expected in capsys.readouterr().err
