"""pipeline.py with fake steps, for the tests of its record, checks and signals (test_pipeline_record.py).

Each fake step leaves what the real one would for the pipeline to go on: a file in its output folder, and
crf.py its record; tools.export_weights writes --out as JSON holding the --pipeline snapshot it was given.
A fake train.py of the run named by $FAKE_BLOCK writes <run>/started and waits for SIGINT or SIGTERM, then
exits 128 + it as train.py does after saving; $FAKE_LOG collects every step's command line.

    python tests/fake_pipeline.py PIPELINE_FLAGS...   pipeline.py whose steps are these fakes, each a process
    python tests/fake_pipeline.py step SCRIPT FLAGS... one fake step (what that pipeline runs)
"""
import json
import os
import signal
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text)


def _wait_for_a_signal(marker):
    def stop(number, frame):
        sys.exit(128 + number)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    _write(marker, 'waiting')
    while True:
        time.sleep(0.05)


def fake_step(argv):
    """Do what step ``argv`` ([SCRIPT, *FLAGS] or ['-m', TOOL, *FLAGS]) leaves behind; returns its exit code."""
    if os.environ.get('FAKE_LOG'):
        with open(os.environ['FAKE_LOG'], 'a') as handle:
            handle.write(' '.join(argv) + '\n')
    words = argv[1:] if argv[0] == '-m' else argv
    script, flags = words[0], dict(zip(words[1::2], words[2::2]))
    if script == 'tools.export_weights':
        snapshot = flags.get('--pipeline')
        _write(flags['--out'], json.dumps({'pipeline': json.load(open(snapshot)) if snapshot else None}))
        return 0
    run = os.path.join(flags['--result_dir'], flags['--dataset'], flags['--folder'], flags['--name'])
    if script == 'train.py' and flags['--name'] == os.environ.get('FAKE_BLOCK'):
        _wait_for_a_signal(os.path.join(run, 'started'))
    folder = {'train.py': 'checkpoints', 'test.py': 'test', 'crf.py': 'crf', 'pseudo.py': 'pseudo'}[script]
    record = {'selection': {'val_DI_after': 0.5, 'chosen_on': 'val'}} if script == 'crf.py' else {}
    _write(os.path.join(run, folder, 'selection.json'), json.dumps(record))
    return 0


def in_process(argv, deadline=None):
    """A run_script for pipeline.py that does each step's work in this process."""
    return fake_step([str(word) for word in argv])


def as_a_process(argv, deadline=None):
    """A run_script for pipeline.py that runs each fake step as its own process, as the real steps run."""
    from workflow.run_script import run_script
    return run_script([os.path.abspath(__file__), 'step', *argv], deadline)


if __name__ == '__main__':
    if sys.argv[1:2] == ['step']:
        sys.exit(fake_step(sys.argv[2:]))
    sys.path.insert(0, REPO_ROOT)
    import pipeline
    pipeline.run_script = as_a_process
    pipeline.main(sys.argv[1:])
