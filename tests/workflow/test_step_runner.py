"""workflow/step_runner.py on tiny fake steps (a step copies its input file to its output, or is stopped), and
start_train.sh's stage-2 chain (workflow/stage2_chain.py) declared as its steps."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from records.pipeline_record import PipelineRecord
from workflow import stage2_chain
from workflow.step_runner import Step, StepRunner, Stopped


class FakeScripts:
    """A launch for StepRunner: 'copy.py SRC DST' copies a file; a script in ``stop`` exits 130 once (Ctrl-C)."""

    def __init__(self):
        self.ran, self.stop = [], set()

    def __call__(self, argv):
        self.ran.append(argv)
        if argv[0] in self.stop:
            self.stop.discard(argv[0])
            return 128 + signal.SIGINT
        if argv[0] == 'copy.py':
            shutil.copyfile(argv[1], argv[2])
        return 0


def chain(tmp_path):
    """Two steps: a -> b -> c (files under ``tmp_path``)."""
    a, b, c = (str(tmp_path / name) for name in 'abc')
    return [Step('first', ['copy.py', a, b], inputs=[a], outputs=[b]),
            Step('second', ['copy.py', b, c], inputs=[b], outputs=[c])]


def run_all(tmp_path, launch, steps, base=None):
    runner = StepRunner(PipelineRecord(str(tmp_path / 'record.json'), base), launch)
    return [runner.execute(step) for step in steps]


def test_a_fresh_step_is_skipped_and_a_changed_input_reruns_it_and_every_later_step(tmp_path, capsys):
    (tmp_path / 'a').write_text('one')
    launch = FakeScripts()
    assert run_all(tmp_path, launch, chain(tmp_path)) == [True, True]
    assert run_all(tmp_path, launch, chain(tmp_path)) == [False, False] and len(launch.ran) == 2
    assert '[first] up to date (0 s), skipped' in capsys.readouterr().out
    (tmp_path / 'a').write_text('two')
    assert run_all(tmp_path, launch, chain(tmp_path)) == [True, True]
    assert (tmp_path / 'c').read_text() == 'two'
    (tmp_path / 'c').write_text('edited')  # an output no longer as the step left it
    assert run_all(tmp_path, launch, chain(tmp_path)) == [False, True]
    record = json.loads((tmp_path / 'record.json').read_text())['steps']
    assert list(record) == ['first', 'second'] and record['second']['status'] == 'done'
    assert record['second']['inputs'] == {str(tmp_path / 'b'): record['first']['outputs'][str(tmp_path / 'b')]}


def test_an_interrupted_training_step_continues_with_resume_and_a_plain_step_runs_again(tmp_path):
    (tmp_path / 'a').write_text('one')
    train = Step('train', ['train.py'], inputs=[str(tmp_path / 'a')], outputs=[], trains=True)
    plain = Step('test', ['test.py'], inputs=[], outputs=[])
    launch = FakeScripts()
    launch.stop = {'train.py'}
    with pytest.raises(Stopped) as info:
        run_all(tmp_path, launch, [train])
    assert (info.value.number, info.value.step) == (signal.SIGINT, 'train')
    assert json.loads((tmp_path / 'record.json').read_text())['steps']['train']['status'] == 'started'
    run_all(tmp_path, launch, [train])
    assert launch.ran == [['train.py'], ['train.py', '--resume', 'True']]
    launch.stop = {'test.py'}
    with pytest.raises(Stopped):
        run_all(tmp_path, launch, [plain])
    run_all(tmp_path, launch, [plain])
    assert launch.ran[2:] == [['test.py'], ['test.py']]


def test_a_failed_step_stops_with_one_line_and_runs_again(tmp_path):
    runner = StepRunner(PipelineRecord(str(tmp_path / 'record.json')), lambda argv: 3)
    with pytest.raises(SystemExit) as info:
        runner.execute(Step('x', ['x.py'], inputs=[], outputs=[]))
    assert str(info.value.code) == ('error: step x failed (exit 3); fix what it printed above and run the same '
                                    'command again (finished steps are kept)')


class Relative(StepRunner):
    """A runner whose record names the command's paths by their file names (as tools/benchmark.py leaves out
    --result_dir) and its inputs and outputs relative to its folder."""

    def __init__(self, folder, launch):
        super().__init__(PipelineRecord(str(folder / 'record.json'), str(folder)), launch)

    def recorded_argv(self, step):
        return [os.path.basename(word) for word in step.argv]


def test_a_record_relative_to_its_folder_stays_up_to_date_when_the_folder_moves(tmp_path):
    here, there = tmp_path / 'here', tmp_path / 'there'
    here.mkdir()
    (here / 'a').write_text('one')
    launch = FakeScripts()
    assert [Relative(here, launch).execute(step) for step in chain(here)] == [True, True]
    record = json.loads((here / 'record.json').read_text())['steps']['second']
    assert list(record['inputs']) == ['b'] and list(record['outputs']) == ['c'] and record['argv'][1:] == ['b', 'c']
    shutil.move(here, there)
    runner = Relative(there, launch)
    assert [runner.execute(step) for step in chain(there)] == [False, False] and len(launch.ran) == 2


# What `bash start_train.sh ISIC 2` passes (DATAROOT=../data, NAME=mine, STAGE2_ARGS="--few_sample stage2_50").
RUN = ['--dataset', 'ISIC', '--dataroot', '../data', '--name', 'mine']
STAGE1 = ['--name', 'mine', '--dataset', 'ISIC', '--dataroot', '../data', '--resume', 'True', '--iteration', '5']
STAGE2 = ['--dataset', 'ISIC', '--dataroot', '../data', '--stage', '2', '--pseudo', 'mine', '--name', 'mine_stage2',
          '--few_sample', 'stage2_50']


def test_start_train_stage_2_is_one_call_of_the_chain_with_the_same_words(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), DATAROOT='../data', NAME='mine', STAGE2_ARGS='--few_sample stage2_50')
    ran = subprocess.run(['bash', os.path.join(REPO_ROOT, 'start_train.sh'), 'ISIC', '2', '--iteration', '5'],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert ran == ['-m', 'workflow.stage2_chain', *RUN, '--', *STAGE1, '--', *STAGE2]


def test_the_chain_runs_the_five_scripts_once_and_then_only_what_changed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []

    def launch(argv, deadline=None):
        ran.append(argv)
        if argv[0] == 'train.py':  # a checkpoint in the run folder --name names
            name = argv[len(argv) - 1 - argv[::-1].index('--name') + 1]
            os.makedirs(os.path.join('results', 'ISIC', 'isic_1', name, 'checkpoints'), exist_ok=True)
            with open(os.path.join('results', 'ISIC', 'isic_1', name, 'checkpoints', 'iter_1.pt'), 'w') as f:
                f.write(' '.join(argv))
        return 0
    monkeypatch.setattr(stage2_chain, 'run_script', launch)
    stage2_chain.main([*RUN, '--', *STAGE1, '--', *STAGE2])
    assert ran == [['train.py', *STAGE1], ['test.py', *RUN], ['crf.py', *RUN], ['pseudo.py', *RUN],
                   ['train.py', *STAGE2]]
    stage2_chain.main([*RUN, '--', *STAGE1, '--', *STAGE2])
    assert len(ran) == 5 and capsys.readouterr().out.count('up to date') == 5
    stage2_chain.main([*RUN, '--', *STAGE1, '--', *STAGE2, '--overwrite', 'True'])
    assert ran[5:] == [['train.py', *STAGE2, '--overwrite', 'True']]
    assert os.path.isfile(os.path.join('results', 'ISIC', 'isic_1', 'mine', 'stage2_chain.json'))


def test_the_chain_needs_its_three_word_lists(capsys):
    with pytest.raises(SystemExit) as info:
        stage2_chain.main(RUN)
    assert 'RUN_WORDS... -- STAGE1_WORDS... -- STAGE2_WORDS...' in str(info.value.code)


@pytest.mark.slow
def test_the_chain_runs_as_a_module():
    help_text = subprocess.run([sys.executable, '-m', 'workflow.stage2_chain'], cwd=REPO_ROOT, capture_output=True,
                               text=True)
    assert help_text.returncode == 1 and 'usage: python -m workflow.stage2_chain' in help_text.stderr
