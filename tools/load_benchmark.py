"""How fast the demo model trains while other processes keep the CPU busy, under each thread policy.

    python -m tools.load_benchmark                       # idle, then one busy process per core
    python -m tools.load_benchmark --loads 0,1,2 --steps 10 --json load.json

For each number of competing processes in --loads (each a Python busy loop, started before the measurement
and stopped after it) and each policy in --policies, a fresh process builds the demo's model (start_train.sh's
64 px, ch 16 setting unless given) and times --steps training steps (one optimize_parameters() on random
images) after --warmup unmeasured ones:
  old      the former default of --num_threads 0: torch's own thread count (all physical cores), OpenMP's
           default waits (idle threads spin after every parallel operation);
  passive  the same threads, idle OpenMP threads sleeping (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0);
  new      today's default: passive waits and one thread per core free when the process starts
           (util/hardware.py, which says what it chose).
It prints, per row, the threads used, the steps measured (fewer than --steps once they took --row_seconds),
seconds per step (median and range) and the CPU seconds the process spent per step (above the seconds per
step: threads that computed in parallel, or spun). Only the rows of one run are comparable: other jobs on
the machine change them (the load average is printed).
"""
import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

import torch  # before util: the 'old' policy's OpenMP must load without util's passive wait policy

from data.image_io import write_json_atomic
from models import create_model
from options.train_options import TrainOptions
from util import QUIET_OPENMP
from util.hardware import apply_hardware_options, usable_cores
from util.machine import machine

RESULT_MARK = 'LOAD_RESULT '  # prefix of the worker's one stdout line the parent reads
CHOSEN_MARK = 'torch threads: '  # util/hardware.py's line saying what --num_threads 0 chose
POLICIES = ('old', 'passive', 'new')
BUSY_LOOP = 'while True: pass'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m tools.load_benchmark', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--loads', default=None,
                        help='comma-separated numbers of competing busy processes (default: 0 and one per usable '
                             'core)')
    parser.add_argument('--policies', default='old,new', help=f"comma-separated thread policies: {', '.join(POLICIES)}")
    parser.add_argument('--steps', type=int, default=8, help='measured training steps per row')
    parser.add_argument('--row_seconds', type=float, default=60.0,
                        help='a row stops measuring once its measured steps took this long (a collapsed policy '
                             'would otherwise take minutes), after one step at least')
    parser.add_argument('--warmup', type=int, default=2, help='unmeasured training steps before them')
    parser.add_argument('--img_size', type=int, default=64, help="image side in pixels (the demo's 64)")
    parser.add_argument('--ch', type=int, default=16, help="base channel number of the networks (the demo's 16)")
    parser.add_argument('--json', default=None, metavar='PATH', help='also write every figure to this JSON file')
    parser.add_argument('--_worker', default=None, help=argparse.SUPPRESS)  # internal: one row, in a subprocess
    return parser


def _numbers(parser, flag, text):
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        parser.error(f'{flag}: expected comma-separated whole numbers >= 0, got {text!r}')
    return values


def parse(argv):
    parser = build_parser()
    opt = parser.parse_args(argv)
    opt.loads = _numbers(parser, '--loads', opt.loads) if opt.loads else [0, usable_cores()]
    opt.policies = [p.strip() for p in opt.policies.split(',') if p.strip()]
    if not opt.policies or set(opt.policies) - set(POLICIES):
        parser.error(f"--policies: expected some of {', '.join(POLICIES)}, got {','.join(opt.policies)!r}")
    if opt.steps < 1 or opt.warmup < 0 or opt.row_seconds <= 0:
        parser.error(f'--steps must be at least 1, --warmup at least 0 and --row_seconds above 0, got {opt.steps}, '
                     f'{opt.warmup} and {opt.row_seconds}')
    return opt


# ---- one row, in its own process ----

def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(policy, steps, warmup, img_size, ch, row_seconds):
    """Train the demo model ``steps`` steps (fewer once they took ``row_seconds``) under ``policy`` in this
    process; its figures."""
    threads = 0 if policy == 'new' else torch.get_num_threads()
    opt = TrainOptions().parse(['--dataset', 'demo', '--img_size', str(img_size), '--ch', str(ch), '--device', 'cpu',
                                '--num_workers', '0', '--display_id', '0', '--num_threads', str(threads)])
    apply_hardware_options(opt)
    torch.manual_seed(opt.seed)
    model = create_model(opt)
    model.train()
    shape = (opt.batch_size, opt.img_ch, opt.img_size, opt.img_size)
    model.set_input({'A': torch.rand(shape) * 2 - 1, 'B': torch.rand(shape) * 2 - 1})
    seconds = []
    for step in range(warmup + steps):
        if step == warmup:
            cpu = _cpu_seconds()
        started = time.perf_counter()
        model.optimize_parameters()
        if step >= warmup:
            seconds.append(time.perf_counter() - started)
            if sum(seconds) >= row_seconds:
                break
    return {'policy': policy, 'threads': torch.get_num_threads(),
            'wait_policy': os.environ.get('OMP_WAIT_POLICY', 'default') if policy != 'old' else 'default',
            'seconds': seconds, 'median': statistics.median(seconds), 'min': min(seconds), 'max': max(seconds),
            'cpu_per_step': (_cpu_seconds() - cpu) / len(seconds)}


def policy_environment(policy):
    """The environment of a worker of ``policy``: OpenMP's default waits for 'old', passive otherwise."""
    env = {key: value for key, value in os.environ.items() if key not in QUIET_OPENMP and key != 'OMP_NUM_THREADS'}
    if policy != 'old':
        env.update(QUIET_OPENMP)
    return env


def run_row(policy, opt):
    """Measure ``policy`` in a fresh worker process; its figures."""
    spec = json.dumps({'policy': policy, 'steps': opt.steps, 'warmup': opt.warmup, 'img_size': opt.img_size,
                       'ch': opt.ch, 'row_seconds': opt.row_seconds})
    done = subprocess.run([sys.executable, '-m', 'tools.load_benchmark', '--_worker', spec], stdout=subprocess.PIPE,
                          text=True, cwd=ROOT, env=policy_environment(policy))
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode or not lines:
        raise SystemExit(f'load benchmark: the {policy} worker stopped (exit {done.returncode}) before reporting; '
                         'see the messages above')
    chosen = [line for line in done.stdout.splitlines() if line.startswith(CHOSEN_MARK)]
    return dict(json.loads(lines[-1][len(RESULT_MARK):]), chosen=chosen[-1] if chosen else None)


def busy_processes(count):
    """``count`` started busy-loop processes (one core each)."""
    return [subprocess.Popen([sys.executable, '-c', BUSY_LOOP]) for _ in range(count)]


def stop(processes):
    """Stop the busy loops this benchmark started (by their own handles) and reap them."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def measure_load(load, opt):
    """Every policy's row with ``load`` busy processes running beside it."""
    processes = busy_processes(load)
    try:
        time.sleep(0.5 if load else 0)  # let them start spinning before a worker looks at the free cores
        return [dict(run_row(policy, opt), load=load, load_average=os.getloadavg()[0]) for policy in opt.policies]
    finally:
        stop(processes)


def format_report(report):
    lines = [f"Demo model training ({report['img_size']} px, ch {report['ch']}), up to {report['steps']} steps per "
             f"row, {report['cores']} usable cores", f"machine: {report['machine']}", '',
             f"{'busy procs':>10} {'policy':<8} {'threads':>7} {'steps':>5} {'s/step: median [range]':<26} "
             f"{'CPU s/step':>10} {'load avg':>8}"]
    for row in report['rows']:
        timing = f"{row['median']:.3f} [{row['min']:.3f} - {row['max']:.3f}]"
        lines.append(f"{row['load']:>10} {row['policy']:<8} {row['threads']:>7} {len(row['seconds']):>5} {timing:<26} "
                     f"{row['cpu_per_step']:>10.3f} {row['load_average']:>8.2f}")
    lines += [f"{row['load']} busy, new: {row['chosen']}" for row in report['rows'] if row.get('chosen')]
    return '\n'.join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    opt = parse(argv)
    if opt._worker:
        print(RESULT_MARK + json.dumps(measure(**json.loads(opt._worker))), flush=True)
        return None
    report = {'command': 'python -m tools.load_benchmark ' + shlex.join(argv), 'machine': machine(),
              'cores': usable_cores(), 'img_size': opt.img_size, 'ch': opt.ch, 'steps': opt.steps,
              'rows': [row for load in opt.loads for row in measure_load(load, opt)]}
    print(format_report(report))
    if opt.json:
        write_json_atomic(opt.json, report)
        print(f'wrote {opt.json}')
    return report


if __name__ == '__main__':
    main()
