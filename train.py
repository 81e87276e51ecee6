"""Train CLTNet on two folders of weakly labelled images.

    python train.py --dataroot ../shared/datasets --dataset ISIC --folder isic_1
    python train.py --dataset demo                      # embedded synthetic data, made on first use

Everything of a run goes to <result_dir>/<dataset>/<folder>/<name>/ (opt.txt, loss_log.csv,
checkpoints/, samples/). ``--resume True`` continues from the latest checkpoint at the next step.
"""
import os
import random
import signal
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.image_io import write_text_atomic
from data.layout import LayoutError, check_training_layout
from data.step_sampler import SeededItems, StepSampler
from data.synthetic import ensure_demo_dataset
from data.weak_dataset import WeakImageDataset
from models import create_model
from models.base_model import CheckpointError
from options.base_options import format_options, run_dir
from options.train_options import TrainOptions
from util.checkpoints import checkpoint_path, list_checkpoints
from util.visualizer import Visualizer


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived: save at the current step and leave cleanly."""


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(paths, opt, stream, start_step, device):
    """An endless loader over one weak-label folder, resumable at ``start_step``."""
    dataset = SeededItems(WeakImageDataset(paths, opt.img_size, opt.img_ch, augment=True))
    sampler = StepSampler(len(paths), opt.batch_size, opt.seed, stream, start_step)
    # Its own generator: starting an iterator draws a base seed, which from the global RNG would
    # shift the stream a resumed run has just restored (items are seeded by SeededItems anyway).
    generator = torch.Generator().manual_seed(opt.seed)
    return iter(DataLoader(dataset, batch_size=opt.batch_size, sampler=sampler, num_workers=opt.num_workers,
                           pin_memory=device.startswith('cuda'), persistent_workers=opt.num_workers > 0,
                           generator=generator))


def check_data(opt):
    """Build the demo data if asked for, then check the layout; exit with one clear message if bad."""
    if opt.dataset == 'demo':
        ensure_demo_dataset(opt.dataroot, dataset='demo', folder=opt.folder)
    try:
        files = check_training_layout(opt.dataroot, opt.dataset, opt.folder, skip_bad=opt.skip_bad_images)
    except LayoutError as error:
        raise SystemExit(f'error: {error}\n(use --skip_bad_images True to train without unreadable files)')
    if files.skipped:
        print(f'skipped {len(files.skipped)} unreadable file(s):', *files.skipped, sep='\n  ')
    return files


def resume(model, folder):
    """Load the newest loadable checkpoint; returns the step to continue from (1 if none)."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            state = model.load(path)
        except CheckpointError as error:
            if 'another architecture' in str(error):
                raise SystemExit(f'error: {error}')
            print(f'warning: {error}; trying an earlier checkpoint')
            continue
        torch.set_rng_state(state['rng']['torch'])
        print(f'resumed from {path} (step {step})')
        return step + 1
    print(f'no checkpoint in {folder}/checkpoints; starting from step 1')
    return 1


class LossBuffer:
    """Keeps the per-step loss tensors and turns them into numbers only when flushed (no per-step
    device sync); refuses non-finite values so nothing with NaN is ever logged or saved."""

    def __init__(self):
        self.rows = []

    def add(self, step, losses):
        self.rows.append((step, losses))

    def flush(self, visualizer, groups, progress):
        if not self.rows:
            return
        names = list(self.rows[0][1])
        values = torch.stack([torch.stack([l[n].float() for n in names]) for _, l in self.rows]).cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            row, col = bad[0].tolist()
            raise SystemExit(f'error: loss {names[col]} became {values[row, col].item()} at step '
                             f'{self.rows[row][0]}; no checkpoint was written after the last finite one. '
                             f'Lower --lr or rerun with --detect_anomaly True to find the operation')
        for (step, _), row in zip(self.rows, values.tolist()):
            visualizer.log_losses(step, dict(zip(names, row)))
        mean = dict(zip(names, values.mean(0).tolist()))
        visualizer.plot_losses(self.rows[-1][0], mean, groups)
        progress.set_postfix({k: f'{v:.3g}' for k, v in mean.items() if k in ('D_A', 'D_B', 'G_total')})
        self.rows = []


def save_checkpoint(model, folder, step, opt):
    model.save(checkpoint_path(folder, step), step=step, options=vars(opt),
               rng={'torch': torch.get_rng_state()})


def main(argv=None):
    opt = TrainOptions().parse(argv)
    if opt.num_threads > 0:
        torch.set_num_threads(opt.num_threads)
    seed_everything(opt.seed)
    files = check_data(opt)
    folder = run_dir(opt)
    os.makedirs(folder, exist_ok=True)
    text = format_options(opt)
    print(text)
    write_text_atomic(os.path.join(folder, 'opt.txt'), text + '\n')

    model = create_model(opt)
    start = resume(model, folder) if opt.resume else 1
    if start > opt.iteration:
        print(f'nothing to do: the run already reached step {start - 1} (--iteration {opt.iteration})')
        return
    loader_A = make_loader(files.paths_A, opt, 0, start, opt.device)
    loader_B = make_loader(files.paths_B, opt, 1, start, opt.device)
    visualizer = Visualizer(folder, opt.display_id, opt.display_server, opt.display_port, opt.display_env,
                            resume_step=start - 1 if opt.resume else None)
    torch.autograd.set_detect_anomaly(opt.detect_anomaly)

    stop = []

    def request_stop(signum, _frame):
        stop.append(signum)
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    model.train()
    losses = LossBuffer()
    progress = tqdm(range(start, opt.iteration + 1), initial=start - 1, total=opt.iteration,
                    desc=f'train {opt.dataset}', dynamic_ncols=True, file=sys.stdout)
    started = time.time()
    step = start - 1
    try:
        for step in progress:
            model.set_learning_rate(step)
            model.set_input({'A': next(loader_A)['image'], 'B': next(loader_B)['image']})
            model.optimize_parameters()
            losses.add(step, model.get_current_losses())
            if step % opt.display_freq == 0 or step % opt.save_freq == 0 or step == opt.iteration or stop:
                losses.flush(visualizer, model.loss_groups, progress)
            if step % opt.print_freq == 0 or step == opt.iteration:
                visuals = model.get_current_visuals()
                visualizer.save_samples(step, visuals)
                visualizer.display_images(step, visuals)
            if step % opt.save_freq == 0 or step == opt.iteration or stop:
                save_checkpoint(model, folder, step, opt)
            if stop:
                raise StopRequested
    except StopRequested:
        progress.close()
        print(f'stopped by signal {stop[0]} at step {step}; checkpoint saved, continue with --resume True')
        return 128 + stop[0]
    finally:
        progress.close()
        visualizer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    minutes = (time.time() - started) / 60
    print(f'done: {opt.iteration} steps in {minutes:.1f} min; checkpoints in {folder}/checkpoints, '
          f'losses in {folder}/loss_log.csv, samples in {folder}/samples')
    return 0


if __name__ == '__main__':
    sys.exit(main())
