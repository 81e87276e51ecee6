"""Run declared steps, each a script in its own process, skipping those that are up to date.

A step is up to date when its record (records/pipeline_record.py) holds the same command and input digests and
its outputs are as it left them. A step that runs makes every later step of the same runner run too; a
training step that started with the same command and inputs and did not finish continues with --resume.
pipeline.py, tools/benchmark.py and start_train.sh's stage-2 chain (workflow/stage2_chain.py) run their steps
with it: one freshness rule everywhere.
"""
import contextlib
import shlex
import shutil
import signal
import sys
import time

from records.pipeline_record import current_commit, digest
from util.machine import machine


class Step:
    """One process of a chain: its command, the paths it reads and writes, and what to clear
    before it runs afresh."""

    def __init__(self, name, argv, inputs, outputs, clears=(), trains=False, section=None):
        self.name, self.argv, self.inputs, self.outputs = name, argv, list(inputs), list(outputs)
        self.clears, self.trains = list(clears), trains
        self.section = section  # the recipe section its flags come from (None: the pipeline sets them all)


def stop_signal(code):
    """SIGINT or SIGTERM when a step's exit ``code`` says that signal stopped it (128 + it from a script that
    saved and stopped, -it from a child the signal killed), else None."""
    for number in (signal.SIGINT, signal.SIGTERM):
        if code in (128 + number, -number):
            return number
    return None


class Stopped(BaseException):
    """The chain was stopped by signal ``number`` (its exit status is 128 + it); like KeyboardInterrupt, no
    ``except Exception`` on the way catches it."""

    def __init__(self, number, step=None):
        super().__init__(number)
        self.number, self.step = number, step


class StepRunner:
    """Executes steps against one record (a PipelineRecord). ``launch(argv)`` runs a script and returns its exit
    code; ``context`` holds inputs every step reads besides its own (pipeline.py: the dataset's digest)."""

    def __init__(self, record, launch, context=None):
        self.record, self.launch = record, launch
        self.context = dict(context or {})
        self.redo = False  # once a step runs, every later step runs too

    def recorded_argv(self, step):
        """The command the record keeps and compares for ``step``."""
        return step.argv

    def plan(self, step):
        """What the record must hold for ``step`` to be up to date: its command and its inputs' digests."""
        inputs = {self.record.key(path): digest(path) for path in step.inputs}
        return {'argv': self.recorded_argv(step), 'inputs': {**inputs, **self.context}}

    def execute(self, step):
        """Run ``step`` unless it is up to date, and record it; returns True when it ran."""
        plan = self.plan(step)
        if not self.redo and self.record.is_current(step.name, plan):
            self.skipped(step, self.record.steps[step.name])
            return False
        resume = step.trains and not self.redo and self.record.was_interrupted(step.name, plan)
        earlier = self.record.steps.get(step.name, {}).get('seconds_before', 0.0) if resume else 0.0
        if not resume:
            for path in step.clears:
                shutil.rmtree(path, ignore_errors=True)
        self.redo = True
        self.record.steps[step.name] = {**plan, 'status': 'started', 'commit': current_commit(),
                                        'seconds_before': earlier}
        self.record.save()
        self.starting(step, resume)
        started = time.time()
        code = self.launch(step.argv + (['--resume', 'True'] if resume else []))
        seconds = time.time() - started
        self.record.steps[step.name]['seconds_before'] = earlier + seconds
        if code != 0:
            self.record.save()
            self.failed(step, code)
        self.record.steps[step.name].update(
            status='done', seconds=earlier + seconds, machine=machine(),
            outputs={self.record.key(path): digest(path) for path in step.outputs})
        self.record.save()
        return True

    def skipped(self, step, done):
        print(f"[{step.name}] up to date ({done['seconds']:.0f} s), skipped")

    def starting(self, step, resume):
        print(f"[{step.name}] {'continuing' if resume else 'running'}: python {shlex.join(step.argv)}", flush=True)

    def failed(self, step, code):
        """Stop the chain: Stopped when a signal stopped the step, else one line saying how to go on."""
        number = stop_signal(code)
        if number:
            raise Stopped(number, step.name)
        raise SystemExit(f'error: step {step.name} failed (exit {code}); fix what it printed above and run '
                         f'the same command again (finished steps are kept)')


def _terminated(number, frame):
    raise Stopped(number)


@contextlib.contextmanager
def stops_cleanly(what):
    """SIGTERM between steps stops ``what`` (e.g. 'pipeline') as Ctrl-C does (run_script passes it on to a running
    step); either ends it with one line and the exit status 128 + the signal."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    except (KeyboardInterrupt, Stopped) as error:
        stop = error if isinstance(error, Stopped) else Stopped(signal.SIGINT)
        where = f' in step {stop.step}' if stop.step else ''
        print(f'{what} stopped{where} by {signal.Signals(stop.number).name}; the same command continues it',
              file=sys.stderr)
        raise SystemExit(128 + stop.number) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
