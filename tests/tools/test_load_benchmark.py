"""Tests of tools/load_benchmark.py on a tiny model: every row's figures, the policies' environments, and
that the busy processes it starts are stopped. No timing is asserted."""
import argparse
import json
import os

import pytest

from tools import load_benchmark

TINY = ['--img_size', '32', '--ch', '4', '--steps', '1', '--warmup', '0']


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp('load') / 'load.json'
    result = load_benchmark.main(TINY + ['--loads', '1', '--policies', 'old,new', '--json', path])
    with open(path) as handle:
        return argparse.Namespace(result=result, json=json.load(handle))


@pytest.mark.slow
def test_every_load_and_policy_gets_a_row_of_figures(report):
    assert report.json == json.loads(json.dumps(report.result))
    assert 'logical cores' in report.json['machine'] and report.json['cores'] >= 1
    rows = report.json['rows']
    assert [(row['load'], row['policy']) for row in rows] == [(1, 'old'), (1, 'new')]
    for row in rows:
        assert len(row['seconds']) == 1 and row['min'] <= row['median'] <= row['max']
        assert row['threads'] >= 1 and row['cpu_per_step'] > 0 and row['load_average'] >= 0
    old, new = rows[0], rows[1]
    assert old['wait_policy'] == 'default' and old['chosen'] is None
    assert new['wait_policy'] == 'PASSIVE'
    assert new['chosen'].startswith(f"torch threads: {new['threads']} (--num_threads 0: ")


@pytest.mark.slow
def test_printed_report_names_each_row_and_the_choice(report, capsys):
    print(load_benchmark.format_report(report.result))
    out = capsys.readouterr().out
    assert 'Demo model training (32 px, ch 4), up to 1 steps per row' in out and 'machine: ' in out
    rows = [line.split()[:4] for line in out.splitlines() if line.split()[1:2] in (['old'], ['new'])]
    assert [row[:2] for row in rows] == [['1', 'old'], ['1', 'new']] and all(row[3] == '1' for row in rows)
    assert '1 busy, new: torch threads: ' in out


def test_policies_set_or_clear_the_openmp_wait_policy(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')
    old = load_benchmark.policy_environment('old')
    assert 'OMP_WAIT_POLICY' not in old and 'KMP_BLOCKTIME' not in old and 'OMP_NUM_THREADS' not in old
    for policy in ('passive', 'new'):
        env = load_benchmark.policy_environment(policy)
        assert (env['OMP_WAIT_POLICY'], env['KMP_BLOCKTIME']) == ('PASSIVE', '0') and 'OMP_NUM_THREADS' not in env


def test_busy_processes_are_stopped():
    processes = load_benchmark.busy_processes(2)
    load_benchmark.stop(processes)
    assert all(process.returncode is not None for process in processes)
    for process in processes:
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)


def test_a_failing_worker_stops_the_benchmark_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(load_benchmark, 'ROOT', str(tmp_path))  # the worker's module is not found there
    monkeypatch.delenv('PYTHONPATH', raising=False)
    with pytest.raises(SystemExit) as info:
        load_benchmark.run_row('old', load_benchmark.parse(TINY))
    assert str(info.value.code).startswith('load benchmark: the old worker stopped (exit 1) before reporting')


@pytest.mark.parametrize('argv, expected', [(['--loads', 'x'], "--loads: expected comma-separated whole numbers"),
                                            (['--policies', 'fast'], '--policies: expected some of old, passive, new'),
                                            (['--steps', '0'], '--steps must be at least 1'),
                                            (['--row_seconds', '0'], '--row_seconds above 0, got 8, 2 and 0.0')])
def test_bad_values_exit_with_a_message(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        load_benchmark.main(argv)
    assert info.value.code == 2 and expected in capsys.readouterr().err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        load_benchmark.main(['--help'])
    out = capsys.readouterr().out
    for action in load_benchmark.build_parser()._actions:
        if action.help != argparse.SUPPRESS:
            assert action.help and all(flag in out for flag in action.option_strings)
    assert 'old' in out and 'passive' in out and 'new' in out


def test_a_row_stops_after_row_seconds(monkeypatch):
    """A collapsed policy's row ends once its steps took --row_seconds (here: at once, after one step)."""
    monkeypatch.setattr(load_benchmark, 'apply_hardware_options', lambda opt: False)  # malloc policy: process-wide
    row = load_benchmark.measure('old', steps=5, warmup=0, img_size=32, ch=4, row_seconds=1e-9)
    assert len(row['seconds']) == 1 and row['cpu_per_step'] > 0
