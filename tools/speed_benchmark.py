"""How fast CLTNet trains, infers and CRF-refines on this machine, and how much memory training takes.

    python -m tools.benchmark --speed --preset paper --json docs/speed_paper.json
    python -m tools.benchmark --speed --preset cpu --num_threads 2 --json docs/speed_cpu.json
    python -m tools.speed_benchmark --preset cpu --quality 300        # the same tool, called directly

Two paths are measured, each in a fresh subprocess of its own so their memory peaks do not mix:
  fast   the project's defaults: --amp auto (bf16 autocast where the CPU or GPU supports it),
         --channels_last True, the generator step's fakes reused by the discriminator step,
         --keep_freed_memory True, and --compile and --recompute as given here;
  plain  fp32 (--amp off), --channels_last False, --reuse_fakes False (the discriminator step runs
         both generators again for fresh fakes, as the original code did), glibc's default malloc
         policy (--keep_freed_memory False), no compile, no recompute.
For each: seconds per training iteration (one optimize_parameters() on batch_size random A and B
images; median and range over --iters iterations after --warmup unmeasured ones) and the minor page
faults per iteration (memory the kernel had to map in and zero during those iterations), the process's
peak memory after training (peak RSS; on CUDA also torch's peak allocation), and the generator's
inference speed (infer() on batches of --infer_batch images under inference_mode). Then the ratio
plain / fast, and the dense CRF's speed (util/crf_utils.refine_many with the default CRFParams on
synthetic phantom images and probability maps, --crf_workers processes). --quality N also trains
both paths N steps with the same seed on --dataset through train.py and test.py and compares their
val DI. Timings are only comparable on an otherwise idle machine.
"""
import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from data.image_io import write_json_atomic, write_png_atomic
from data.synthetic import make_phantom
from models import create_model
from options.base_options import NUM_THREADS_HELP, PRESETS, default_folder, str2bool
from options.train_options import TrainOptions
from records.record_io import load_json
from records.run_folder import run_folder, split_folder, summary_path
from util.hardware import apply_hardware_options
from util.machine import machine
from util.progress import progress_bar
from workflow.run_script import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_MARK = 'SPEED_RESULT '  # prefix of the worker's one stdout line the parent reads


TRAINING_ONLY = ('reuse_fakes', 'recompute')  # path flags test.py does not take


def path_options(name, opt):
    """{flag: value} of the path ``name`` ('fast' or 'plain'); the fast path takes --compile and --recompute
    from ``opt``."""
    if name == 'fast':
        return {'amp': 'auto', 'channels_last': 'True', 'compile': str(opt.compile), 'reuse_fakes': 'True',
                'recompute': str(opt.recompute), 'keep_freed_memory': 'True'}
    return {'amp': 'off', 'channels_last': 'False', 'compile': 'False', 'reuse_fakes': 'False', 'recompute': 'False',
            'keep_freed_memory': 'False'}


def _flags(options, skip=()):
    """{flag: value} -> ['--flag', 'value', ...] without the ``skip`` flags."""
    return [arg for key, value in options.items() if key not in skip for arg in (f'--{key}', value)]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults shown, and the module docstring kept as written."""


def build_parser(prog='python -m tools.speed_benchmark'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=_HelpFormatter)
    g = parser.add_argument_group('setting (default: the preset\'s values)')
    g.add_argument('--preset', choices=sorted(PRESETS), default=None,
                   help="'paper' (256 px, ch 54, n_res 4, light, batch 1) or 'cpu' (128 px, ch 32); default: "
                        "paper on CUDA, cpu otherwise (as train.py)")
    g.add_argument('--img_size', type=int, default=None, help='image side in pixels (divisible by 4)')
    g.add_argument('--ch', type=int, default=None, help='base channel number of the networks')
    g.add_argument('--n_res', type=int, default=None, help='residual blocks per encoder / decoder branch')
    g.add_argument('--light', type=str2bool, default=None, help='True: the light U-GAT-IT gamma/beta MLP')
    g.add_argument('--batch_size', type=int, default=None, help='training images per domain and step')
    g.add_argument('--device', default='auto', help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument('--num_threads', type=int, default=0, help=NUM_THREADS_HELP)
    g.add_argument('--compile', type=str2bool, default=False,
                   help='True: the fast path compiles its networks with torch.compile (the plain path never does)')
    g.add_argument('--recompute', type=str2bool, default=False,
                   help="True: the fast path recomputes the generators' activations in the backward pass "
                        '(train.py --recompute; the plain path never does)')
    g = parser.add_argument_group('measurement')
    g.add_argument('--iters', type=int, default=10, help='measured training iterations (and inference batches)')
    g.add_argument('--warmup', type=int, default=2, help='unmeasured iterations (and batches) before them')
    g.add_argument('--infer_batch', type=int, default=8, help='images per inference batch')
    g.add_argument('--paths', default='fast,plain', help="comma-separated paths to measure: fast, plain")
    g.add_argument('--crf_workers', type=int, default=2, help='CRF worker processes')
    g.add_argument('--crf_images', type=int, default=16, help='synthetic images the CRF refines (0: skip the CRF)')
    g.add_argument('--json', default=None, metavar='PATH', help='also write every figure to this JSON file')
    g = parser.add_argument_group('quality check (off by default)')
    g.add_argument('--quality', type=int, default=0, metavar='ITERS',
                   help='> 0: train both paths ITERS steps (same seed) with train.py, choose on val with test.py '
                        'and print their val DI and its difference')
    g.add_argument('--dataroot', default='./dataset', help='--quality: folder holding <dataset>/<folder>/')
    g.add_argument('--dataset', default='demo', help="--quality: dataset ('demo' is built on first use)")
    parser.add_argument('--_worker', default=None, help=argparse.SUPPRESS)  # internal: one path, in a subprocess
    return parser


def parse(argv):
    parser = build_parser()
    opt = parser.parse_args(argv)
    opt.paths = [p for p in (s.strip() for s in opt.paths.split(',')) if p]
    if not opt.paths or set(opt.paths) - {'fast', 'plain'}:
        parser.error(f'--paths: expected fast and/or plain, got {",".join(opt.paths)!r}')
    for flag in ('iters', 'infer_batch', 'crf_workers'):
        if getattr(opt, flag) < 1:
            parser.error(f'--{flag} must be at least 1, got {getattr(opt, flag)}')
    if opt.warmup < 0 or opt.crf_images < 0 or opt.quality < 0:
        parser.error('--warmup, --crf_images and --quality must not be negative')
    return opt


def setting_argv(opt, with_batch=True):
    """The model flags shared by every run of this benchmark (train.py / test.py spelling)."""
    argv = ['--device', opt.device, '--num_threads', str(opt.num_threads)]
    names = ('preset', 'img_size', 'ch', 'n_res', 'light') + (('batch_size',) if with_batch else ())
    for name in names:
        if getattr(opt, name) is not None:
            argv += [f'--{name}', str(getattr(opt, name))]
    return argv


# ---- one path, in its own process ----

def _timed_calls(func, iters, warmup, sync, desc):
    """(seconds of each of ``iters`` calls of ``func`` after ``warmup`` unmeasured ones, the process's
    minor page faults per measured call)."""
    seconds = []
    for i in progress_bar(range(warmup + iters), desc=desc, unit='it'):
        if i == warmup:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        func()
        sync()
        if i >= warmup:
            seconds.append(time.perf_counter() - started)
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / iters


def _summary(seconds):
    return {'median': statistics.median(seconds), 'min': min(seconds), 'max': max(seconds), 'all': seconds}


def measure_path(name, argv, iters, warmup, infer_batch):
    """Train, then infer, with the train.py options ``argv``; returns this path's figures."""
    opt = TrainOptions().parse(argv + ['--display_id', '0', '--num_workers', '0'])
    kept = apply_hardware_options(opt)
    torch.manual_seed(opt.seed)
    model = create_model(opt)
    model.train()
    cuda = model.device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    shape = (opt.batch_size, opt.img_ch, opt.img_size, opt.img_size)
    model.set_input({'A': torch.rand(shape) * 2 - 1, 'B': torch.rand(shape) * 2 - 1})
    train_seconds, train_faults = _timed_calls(model.optimize_parameters, iters, warmup, sync, f'{name}: train')
    setting = {key: getattr(opt, key) for key in ('preset', 'img_size', 'ch', 'n_res', 'light', 'batch_size',
                                                  'device')}
    result = {'path': name, 'setting': setting, 'amp': str(model.dtype or torch.float32).replace('torch.', ''),
              'output_dtype': str(model.fake_B.dtype).replace('torch.', ''),
              'channels_last': model.G_AB.encoder[1].weight.is_contiguous(memory_format=torch.channels_last),
              'reuse_fakes': opt.reuse_fakes, 'compile': opt.compile, 'recompute': opt.recompute,
              'keep_freed_memory': kept,
              'threads': torch.get_num_threads(),
              'train_seconds': _summary(train_seconds),
              'page_faults_per_iteration': train_faults,
              'losses': {k: float(v) for k, v in model.get_current_losses().items()},
              # ru_maxrss is in KiB on Linux; read before inference, so it is the training peak.
              'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if cuda:
        result['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    model.train(False)
    images = torch.rand(infer_batch, opt.img_ch, opt.img_size, opt.img_size) * 2 - 1
    infer_seconds, _ = _timed_calls(lambda: model.infer(images), iters, warmup, sync, f'{name}: infer')
    result['infer_seconds'] = _summary(infer_seconds)
    result['infer_images_per_second'] = infer_batch / result['infer_seconds']['median']
    return result


def worker(spec):
    """The --_worker entry: measure one path and print its figures as one marked JSON line; returns the
    exit code."""
    try:
        result = measure_path(**json.loads(spec))
    except SystemExit as error:  # e.g. --compile on a machine without a compiler: pass its one line on
        if not isinstance(error.code, str):
            raise
        result = {'error': error.code}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 1 if 'error' in result else 0


def run_path(name, opt):
    """Measure path ``name`` in a fresh subprocess (its progress bars go to our stderr)."""
    spec = {'name': name, 'argv': setting_argv(opt) + _flags(path_options(name, opt)), 'iters': opt.iters,
            'warmup': opt.warmup, 'infer_batch': opt.infer_batch}
    done = subprocess.run([sys.executable, '-m', 'tools.speed_benchmark', '--_worker', json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise SystemExit(f'speed benchmark: the {name} path stopped (exit {done.returncode}) before reporting; '
                         f'see the messages above')
    result = json.loads(lines[-1][len(RESULT_MARK):])
    if 'error' in result:
        raise SystemExit(result['error'])
    return result


# ---- CRF and quality, in this process ----

def synthetic_crf_items(folder, size, count):
    """(image, probability map) PNG pairs of ``count`` phantoms at ``size`` px, written under ``folder``:
    the inputs crf.py reads, with a blurred lesion as the map."""
    from refinement.crf_utils import PROB_SCALE
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        gray, _, lesion = make_phantom(rng, size, 1)
        prob = gaussian_filter(lesion.astype(np.float32), max(1.0, size / 64)).clip(0, 1)
        image_path, prob_path = (os.path.join(folder, f'{i}_{kind}.png') for kind in ('image', 'prob'))
        write_png_atomic(image_path, np.repeat(gray[:, :, None], 3, axis=2))
        write_png_atomic(prob_path, np.round(prob * PROB_SCALE).astype(np.uint16))
        items.append((image_path, prob_path))
    return items


def crf_speed(size, count, workers):
    """Images per second of refine_many on ``count`` synthetic pairs (reading the files included)."""
    # Imported here so --crf_images 0 runs where pydensecrf is not installed (a GPU box, say).
    from refinement.crf_utils import CRFParams, refine_many
    with tempfile.TemporaryDirectory(prefix='speed_crf_') as folder:
        items = synthetic_crf_items(folder, size, count)
        started = time.perf_counter()
        refine_many(items, CRFParams(), num_workers=workers, desc=f'CRF ({workers} workers)')
        elapsed = time.perf_counter() - started
    return {'images': count, 'workers': workers, 'img_size': size, 'params': CRFParams().as_dict(),
            'seconds': elapsed, 'images_per_second': count / elapsed}


def val_dice(opt, name, root):
    """Train path ``name`` for opt.quality steps with train.py, choose on val with test.py (each in its
    own process); its val DI."""
    options = path_options(name, opt)
    data = ['--dataroot', opt.dataroot, '--dataset', opt.dataset, '--result_dir', root, '--name', name]
    steps = [['train.py', *data, *setting_argv(opt), *_flags(options), '--iteration', str(opt.quality),
              '--save_freq', str(opt.quality), '--display_id', '0'],
             ['test.py', *data, *setting_argv(opt, with_batch=False), *_flags(options, skip=TRAINING_ONLY)]]
    for argv in steps:
        code = run_script(argv)
        if code:
            raise SystemExit(f'speed benchmark: {argv[0]} of the {name} path stopped ({code})')
    run = run_folder(root, opt.dataset, default_folder(opt.dataset), name)
    return load_json(summary_path(split_folder(run, 'test', 'val')))['DI']


def quality(opt):
    """{'val_DI': {path: DI}, 'difference': plain - fast} after opt.quality training steps of each path."""
    with tempfile.TemporaryDirectory(prefix='speed_quality_') as root:
        dice = {name: val_dice(opt, name, root) for name in ('fast', 'plain')}
    return {'iterations': opt.quality, 'dataset': opt.dataset, 'val_DI': dice,
            'difference': dice['plain'] - dice['fast']}


def ratios(fast, plain):
    """plain / fast of training time, inference time and peak memory (> 1: the fast path is better)."""
    return {'train_seconds': plain['train_seconds']['median'] / fast['train_seconds']['median'],
            'infer_seconds': fast['infer_images_per_second'] / plain['infer_images_per_second'],
            'peak_rss': plain['peak_rss_mb'] / fast['peak_rss_mb']}


def format_report(report):
    """The figures of ``report`` as aligned text lines."""
    s = report['setting']
    lines = [f"CLTNet speed: {s['img_size']} px, ch {s['ch']}, n_res {s['n_res']}, light {s['light']}, "
             f"batch {s['batch_size']} (preset {s['preset']}) on {s['device']}, {s['threads']} threads, "
             f"torch {report['torch']}",
             f"machine: {report['machine']}", '',
             f"{'path':<6} {'amp':<9} {'channels_last':<14} {'reuse_fakes':<12} {'compile':<8} {'recompute':<10} "
             f"{'keep_freed':<11} {'s/iteration: median [range]':<28} {'faults/it':>10} {'peak RSS':>9} "
             f"{'infer img/s':>12}"]
    for name, r in report['paths'].items():
        t = r['train_seconds']
        timing = f"{t['median']:.3f} [{t['min']:.3f} - {t['max']:.3f}]"
        memory = f"{r['peak_rss_mb'] / 1024:.2f} GB"
        lines.append(f"{name:<6} {r['amp']:<9} {str(r['channels_last']):<14} {str(r['reuse_fakes']):<12} "
                     f"{str(r['compile']):<8} {str(r['recompute']):<10} {str(r['keep_freed_memory']):<11} "
                     f"{timing:<28} {r['page_faults_per_iteration']:>10.0f} {memory:>9} "
                     f"{r['infer_images_per_second']:>12.1f}")
        if 'peak_cuda_mb' in r:
            lines.append(f"{'':<6} peak CUDA allocation {r['peak_cuda_mb'] / 1024:.2f} GB")
    if 'plain_over_fast' in report:
        q = report['plain_over_fast']
        lines.append(f"plain / fast: training time {q['train_seconds']:.2f}x, inference time "
                     f"{q['infer_seconds']:.2f}x, peak RSS {q['peak_rss']:.2f}x")
    if 'crf' in report:
        c = report['crf']
        lines.append(f"CRF: {c['images_per_second']:.1f} images/s ({c['images']} images of {c['img_size']} px, "
                     f"{c['workers']} workers)")
    if 'quality' in report:
        q = report['quality']
        lines.append(f"quality after {q['iterations']} steps on {q['dataset']}: val DI fast "
                     f"{q['val_DI']['fast']:.4f}, plain {q['val_DI']['plain']:.4f}, difference {q['difference']:+.4f}")
    return '\n'.join(lines)


def main(argv=None):
    """Measure every path (and the CRF, and with --quality the val DI); print and return the figures."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    opt = parse(argv)
    if opt._worker:
        sys.exit(worker(opt._worker))
    paths = {name: run_path(name, opt) for name in opt.paths}
    first = next(iter(paths.values()))
    report = {'command': 'python -m tools.speed_benchmark ' + shlex.join(argv), 'machine': machine(),
              'torch': torch.__version__, 'setting': dict(first['setting'], threads=first['threads']),
              'paths': paths}
    if {'fast', 'plain'} <= set(paths):
        report['plain_over_fast'] = ratios(paths['fast'], paths['plain'])
    if opt.crf_images:
        report['crf'] = crf_speed(report['setting']['img_size'], opt.crf_images, opt.crf_workers)
    if opt.quality:
        report['quality'] = quality(opt)
    print(format_report(report))
    if opt.json:
        write_json_atomic(opt.json, report)
        print(f'wrote {opt.json}')
    return report


if __name__ == '__main__':
    main()
