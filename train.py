"""Train CLTNet on two folders of weakly labelled images.

    python train.py --dataroot ../shared/datasets --dataset ISIC --folder isic_1
    python train.py --dataset demo                      # embedded synthetic data, made on first use

    torchrun --nproc_per_node=2 train.py --dataset demo     # DistributedDataParallel, 2 processes

Everything of a run goes to <result_dir>/<dataset>/<folder>/<name>/ (opt.txt, loss_log.csv,
checkpoints/, samples/). ``--resume True`` continues from the latest checkpoint at the next step.
Under torchrun every process trains on its own ``--batch_size`` slice of each step's global batch;
rank 0 alone checks the data, reads and writes files and talks to visdom (see util/distributed.py).
"""
import contextlib
import os
import random
import shutil
import signal
import sys
import time

from util.shutdown import exit_quietly_on_ctrl_c

exit_quietly_on_ctrl_c(__name__)  # before the slow imports below (torch: seconds)

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.image_io import write_text_atomic
from data.layout import LayoutError, check_training_layout, few_shot_pairs, held_out_normals, hold_out_spec
from data.pseudo_dataset import MaskedImage, PseudoMaskDataset, few_shot_items
from data.step_sampler import SeededItems, StepSampler
from data.synthetic import make_demo_if_missing
from data.weak_dataset import WeakImageDataset
from models import create_model
from models.base_model import CheckpointError
from options.base_options import format_options, run_dir
from options.train_options import TrainOptions
from util import distributed
from records.run_folder import (checkpoint_path, checkpoints_folder, list_checkpoints, loss_log, options_file,
                                pseudo_folder, pseudo_mask_paths, samples_folder)
from util.full_disk import OUT_OF_SPACE, exit_on_full_disk
from util.hardware import apply_hardware_options
from util.machine import machine
from util.preflight import MIN_FREE_BYTES, check_output_dir, checkpoint_bytes
from util.progress import progress_bar
from util.run_lock import RunLock
from reporting.visualizer import Visualizer


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived: save at the current step and leave cleanly."""


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _leave_process_group(_worker_id):
    # torchrun stops a rank by signalling its whole process group, and a terminal's Ctrl-C reaches the
    # whole foreground group: a loader worker killed that way makes the next batch raise before the
    # training process has saved. In a group of their own, the workers hear only the training
    # process, which shuts them down once it has stopped (and they exit if it dies).
    os.setpgid(0, 0)


def pseudo_items(pseudo_dir, paths, domain):
    """MaskedImage of every training image of ``domain`` with the pseudo-mask pseudo.py wrote for it; SystemExit
    naming the missing files (all at once) when pseudo.py has not written them."""
    items, missing = [], []
    for path in paths:
        mask, confidence = pseudo_mask_paths(pseudo_dir, domain, path)
        missing += [p for p in (mask, confidence) if p and not os.path.isfile(p)]
        items.append(MaskedImage(path, mask, confidence))
    if missing:
        raise SystemExit(f'error: {len(missing)} pseudo-mask file(s) missing in {pseudo_dir}, e.g. {missing[0]}; '
                         f'run pseudo.py for the stage-1 run first (see README, "Stage 2")')
    return items


def training_datasets(opt, files):
    """(lesion, normal) datasets: the weak-label folders (stage 1), or their stage-1 pseudo-masks plus
    the optional few-shot labelled images (stage 2)."""
    if opt.stage == 1:
        # Only lesion images lose resolution: the normal ones already have (see --degrade_A).
        return (WeakImageDataset(files.paths_A, opt.img_size, opt.img_ch, augment=True, jitter=opt.jitter,
                                 rot90=opt.rot90, degrade=opt.degrade_A, degrade_range=opt.degrade_range),
                WeakImageDataset(files.paths_B, opt.img_size, opt.img_ch, augment=True, jitter=opt.jitter,
                                 rot90=opt.rot90))
    pseudo_dir = pseudo_folder(run_dir(opt, opt.pseudo))
    folder_dir = os.path.join(opt.dataroot, opt.dataset, opt.folder)
    paths_A = files.paths_A
    if opt.select_few:  # held out for test.py's choices, so they must not be learned from
        held_out = {os.path.basename(image) for image, _ in few_shot_pairs(folder_dir, opt.select_few)}
        paths_A = [path for path in paths_A if os.path.basename(path) not in held_out]
        if not paths_A:
            raise SystemExit(f'error: --select_few {opt.select_few} holds out all {len(files.paths_A)} lesion '
                             f'training images; pass a few-shot folder with fewer images, or none')
        print(f'--select_few {opt.select_few}: {len(files.paths_A) - len(paths_A)} of {len(files.paths_A)} lesion '
              f'images held out of training for test.py to choose on')
    paths_B = trained_normals(opt, files.paths_B, folder_dir)
    few = few_shot_items(folder_dir, opt.few_sample, opt.few_weight) if opt.few_sample else []
    # A true mask supersedes the pseudo-mask of the same image: training on both would teach two
    # different outlines of one lesion.
    labelled = {os.path.basename(item.image) for item in few}
    items_A = pseudo_items(pseudo_dir, [path for path in paths_A if os.path.basename(path) not in labelled], 'A')
    items_A += few
    items_B = pseudo_items(pseudo_dir, paths_B, 'B')
    return tuple(PseudoMaskDataset(items, opt.img_size, opt.img_ch, opt.min_confidence, jitter=opt.jitter,
                                   rot90=opt.rot90)
                 for items in (items_A, items_B))


def trained_normals(opt, paths_B, folder_dir):
    """The normal images stage 2 trains on: all but the --hold_out_normals ones test.py chooses its gate on."""
    if not opt.hold_out_normals:
        return paths_B
    try:
        held_out = {os.path.basename(path) for path in held_out_normals(folder_dir, **hold_out_spec(vars(opt)))}
    except LayoutError as error:
        raise SystemExit(f'error: {error}') from None
    kept = [path for path in paths_B if os.path.basename(path) not in held_out]
    if not kept:
        group = f' --hold_out_group {opt.hold_out_group!r}' if opt.hold_out_group else ''
        raise SystemExit(f'error: --hold_out_normals {opt.hold_out_normals}{group} leaves none of the {len(paths_B)} '
                         f'normal training images to train on; pass fewer')
    which = 'every image of the last patients by --hold_out_group' if opt.hold_out_group else 'the last'
    print(f'--hold_out_normals {opt.hold_out_normals}: {which} {len(held_out)} of {len(paths_B)} normal images '
          f'held out of training for test.py and crf.py to choose on')
    return kept


def step_input(batch_A, batch_B):
    """The model input of one step: 'A' and 'B' images, plus 'A_target', 'B_weight'... when the
    datasets give masks (stage 2)."""
    batch = {'A': batch_A['image'], 'B': batch_B['image']}
    for key in ('target', 'weight'):
        if key in batch_A:
            batch.update({f'A_{key}': batch_A[key], f'B_{key}': batch_B[key]})
    return batch


def make_loader(dataset, opt, stream, start_step, device):
    """An endless loader over one training dataset, resumable at ``start_step``; under torchrun
    each rank draws its own slice of every step's global batch."""
    sampler = StepSampler(len(dataset), opt.batch_size, opt.seed, stream, start_step,
                          rank=distributed.rank(), world_size=distributed.world_size())
    # Its own generator: starting an iterator draws a base seed, which from the global RNG would
    # shift the stream a resumed run has just restored (items are seeded by SeededItems anyway).
    generator = torch.Generator().manual_seed(opt.seed)
    return iter(DataLoader(SeededItems(dataset), batch_size=opt.batch_size, sampler=sampler,
                           num_workers=opt.num_workers, pin_memory=device.startswith('cuda'),
                           persistent_workers=opt.num_workers > 0, generator=generator,
                           worker_init_fn=_leave_process_group))


def check_data(opt):
    """Build the demo data if asked for, then check the layout; exit with one clear message if bad."""
    make_demo_if_missing(opt.dataroot, opt.dataset, opt.folder)
    try:
        files = check_training_layout(opt.dataroot, opt.dataset, opt.folder, skip_bad=opt.skip_bad_images)
    except LayoutError as error:
        hint = '\n(use --skip_bad_images True to train without unreadable files)' if error.skippable else ''
        raise SystemExit(f'error: {error}{hint}') from None
    if files.skipped:
        print(f'skipped {len(files.skipped)} unreadable file(s):', *files.skipped, sep='\n  ')
    return files


def start_fresh(folder, overwrite):
    """Before a run without --resume: refuse a folder holding an earlier run's checkpoints, or with
    ``overwrite`` delete them, its loss log and samples (rank 0, holding the run's lock)."""
    found = list_checkpoints(folder)
    if not found:
        return
    if not overwrite:
        raise SystemExit(f'error: {checkpoints_folder(folder)} holds {len(found)} checkpoint(s) of an earlier run '
                         f'(last step {found[-1][0]}); continue it with --resume True, start it again with --overwrite '
                         f'True (deletes them), or pass another --name')
    for _, path in found:
        os.remove(path)
    if os.path.exists(loss_log(folder)):
        os.remove(loss_log(folder))
    shutil.rmtree(samples_folder(folder), ignore_errors=True)
    print(f'--overwrite True: deleted the {len(found)} checkpoint(s), loss log and samples of the earlier run '
          f'in {folder}')


def resume(model, folder):
    """Load the newest loadable checkpoint (rank 0); returns the step to continue from (1 if none)."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            state = model.load(path)
        except CheckpointError as error:
            if 'another architecture' in str(error):
                raise SystemExit(f'error: {error}')
            print(f'warning: {error}; trying an earlier checkpoint')
            continue
        torch.set_rng_state(state['rng']['torch'])
        model.prior_train_seconds = state.get('train_seconds', 0.0)
        print(f'resumed from {path} (step {step})')
        return step + 1
    print(f'no checkpoint in {checkpoints_folder(folder)}; starting from step 1')
    return 1


def share_resumed_state(model):
    """Give every rank the networks, optimisers and RNG state rank 0 has just resumed from, so no
    other rank needs to see the run folder (on another node it may not)."""
    state = distributed.broadcast_state({'model': model.state_dict(), 'rng': torch.get_rng_state()}
                                        if distributed.is_main() else None)
    if not distributed.is_main():
        model.load_state_dict(state['model'], source='the state resumed by rank 0')
        torch.set_rng_state(state['rng'])


class LossBuffer:
    """Keeps the per-step loss tensors and turns them into numbers only when flushed (no per-step
    device sync); refuses non-finite values so nothing with NaN is ever logged or saved.

    Under torchrun every rank flushes at the same steps: the values are averaged over the ranks
    (so the log reads the same as one process on the whole global batch) and every rank sees the
    same NaN and stops."""

    def __init__(self):
        self.rows = []

    def add(self, step, losses):
        self.rows.append((step, losses))

    def flush(self, visualizer, groups, progress):
        if not self.rows:
            return
        names = list(self.rows[0][1])
        values = torch.stack([torch.stack([losses[n].float() for n in names]) for _, losses in self.rows])
        values = distributed.mean_over_ranks(values).cpu()
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


def save_checkpoint(model, folder, step, opt, train_seconds):
    """Checkpoint of ``step`` with the options, the RNG state and the wall time trained so far; exits
    with one line, leaving the earlier checkpoints as they are, when a weight is not finite (finite
    losses do not rule out a NaN gradient) or the file cannot be written (a full disk: main's line)."""
    bad = model.nonfinite_weight()
    if bad:
        raise SystemExit(f'error: weight {bad} became non-finite at step {step}; no checkpoint was written after '
                         f'the last finite one. Lower --lr or rerun with --detect_anomaly True to find the operation')
    path = checkpoint_path(folder, step)
    try:
        model.save(path, step=step, options=vars(opt), rng={'torch': torch.get_rng_state()},
                   train_seconds=train_seconds, machine=machine())
    except OSError as error:
        if error.errno in OUT_OF_SPACE:
            raise  # main's line, with the space left
        raise SystemExit(f'error: cannot write {path} ({error.strerror or error}); make it writable, then '
                         f'continue with --resume True') from None


def report_stop(signum, step, main_rank):
    """Say at which step a signal stopped the run; returns the exit code, 128 + the signal number."""
    if main_rank:
        print(f'stopped by signal {signum} at step {step}; checkpoint saved, continue with --resume True')
    return 128 + signum


def main(argv=None):
    """Parse the options, join the torchrun process group (if any) and train; returns the exit code."""
    opt = TrainOptions().parse(argv)
    lock = RunLock(run_dir(opt), 'train.py')
    with distributed.process_group(opt.device) as device:
        opt.device = device
        opt.world_size = distributed.world_size()
        try:
            with exit_on_full_disk('continue with --resume True'):
                return train(opt, lock)
        except SystemExit as error:
            # Rank 0 has printed the reason; the other ranks just fail, without repeating it.
            if not distributed.is_main() and isinstance(error.code, str):
                raise SystemExit(1) from None
            raise
        finally:
            lock.release()


def prepare(opt, lock):
    """(model, run folder, first step, checked data files) of a run ready to train: rank 0 checks the data and
    the folder, takes ``lock``, resumes or starts afresh; the first step is past --iteration when the run has
    nothing left to do."""
    main_rank = distributed.is_main()
    apply_hardware_options(opt)
    files = distributed.from_main(check_data, opt)
    # Seeded after the data check (which only rank 0 runs), so every rank builds the same initial
    # weights and spectral-norm buffers.
    seed_everything(opt.seed)
    folder = run_dir(opt)
    options_text = format_options(opt)
    if main_rank:
        print(options_text)

    model = create_model(opt)
    # Before anything is written: a run that could not save its first checkpoint stops now.
    distributed.from_main(check_output_dir, folder, checkpoint_bytes(model) + MIN_FREE_BYTES,
                          'a checkpoint and the logs')
    distributed.from_main(lock.acquire)
    start = 1
    if opt.resume:
        start = distributed.from_main(resume, model, folder)
        if start > 1:
            share_resumed_state(model)
    else:
        distributed.from_main(start_fresh, folder, opt.overwrite)
    if start > opt.iteration:
        return model, folder, start, files
    if main_rank:
        # Only now: a refused resume leaves the run's opt.txt as it was.
        write_text_atomic(options_file(folder), options_text + '\n')
    if distributed.is_distributed():
        model.wrap_distributed(distributed.wrap)
    return model, folder, start, files


@contextlib.contextmanager
def stop_requests():
    """While the block runs, SIGINT and SIGTERM append their number to the list it gets (the step under way
    finishes and saves first); the previous handlers come back when it ends."""
    stop = []

    def request_stop(signum, _frame):
        stop.append(signum)
    check_workers = signal.getsignal(signal.SIGCHLD)

    def child_exited(signum, frame):
        # torch's SIGCHLD handler raises wherever the step is when a loader worker dies. Workers stopped
        # together with this process (pkill -f train.py) must not cut the step short: next() reports them.
        if not stop and callable(check_workers):
            check_workers(signum, frame)
    handlers = {signal.SIGINT: request_stop, signal.SIGTERM: request_stop, signal.SIGCHLD: child_exited}
    previous = {s: signal.signal(s, handler) for s, handler in handlers.items()}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(opt, lock):
    """Train with ``opt`` (device and world size already set for this process), holding the run folder with
    ``lock`` from the first read of it (rank 0); returns the exit code, 128 + the signal number when a signal
    stopped the run."""
    main_rank = distributed.is_main()
    model, folder, start, files = prepare(opt, lock)
    if start > opt.iteration:
        if main_rank:
            print(f'nothing to do: the run already reached step {start - 1} (--iteration {opt.iteration})')
        return 0
    dataset_A, dataset_B = training_datasets(opt, files)
    loaders = (make_loader(dataset_A, opt, 0, start, opt.device), make_loader(dataset_B, opt, 1, start, opt.device))
    visualizer = Visualizer(folder, opt.display_id, opt.display_server, opt.display_port, opt.display_env,
                            enabled=main_rank, resume_step=start - 1 if opt.resume else None)
    torch.autograd.set_detect_anomaly(opt.detect_anomaly)
    with stop_requests() as stop:
        started = time.time()
        code = train_steps(opt, model, folder, range(start, opt.iteration + 1), loaders, visualizer, stop, lock,
                           started)
    if code is not None:
        return code
    distributed.barrier()
    if main_rank:
        minutes = (time.time() - started) / 60
        print(f'done: {opt.iteration} steps in {minutes:.1f} min; checkpoints in {checkpoints_folder(folder)}, '
              f'losses in {loss_log(folder)}, samples in {samples_folder(folder)}')
    return 0


def train_steps(opt, model, folder, steps, loaders, visualizer, stop, lock, started):
    """Run the training ``steps`` (a range ending at --iteration), logging, showing and saving as the flags say;
    returns the exit code when a signal in ``stop`` ended them early, None when all ran. ``lock`` is released
    at the end either way, before the caller puts the signal handlers back."""
    main_rank = distributed.is_main()
    model.train()
    losses = LossBuffer()
    if main_rank:  # in a log the progress lines come every 30 s at the earliest: say at once that it trains
        print(f'train {opt.dataset}: steps {steps.start} to {opt.iteration}', flush=True)
    # A bar on a terminal; in a log (nohup, a pipeline's) lines with the losses, not carriage returns.
    progress = progress_bar(steps, initial=steps.start - 1, total=opt.iteration, desc=f'train {opt.dataset}',
                            unit='step', file=sys.stdout, leave=True, disable=not main_rank)

    def save(at):
        save_checkpoint(model, folder, at, opt, getattr(model, 'prior_train_seconds', 0.0) + time.time() - started)
    step = steps.start - 1
    try:
        for step in progress:
            model.set_learning_rate(step)
            model.set_input(step_input(next(loaders[0]), next(loaders[1])))
            model.optimize_parameters()
            losses.add(step, model.get_current_losses())
            # A signal may reach the ranks at different steps: all stop after the first step any saw it.
            stopping = distributed.max_over_ranks(stop[0] if stop else 0)
            if step % opt.display_freq == 0 or step % opt.save_freq == 0 or step == opt.iteration or stopping:
                losses.flush(visualizer, model.loss_groups, progress)
            if main_rank and (step % opt.print_freq == 0 or step == opt.iteration):
                visuals = model.get_current_visuals()
                visualizer.save_samples(step, visuals)
                visualizer.display_images(step, visuals)
            if main_rank and (step % opt.save_freq == 0 or step == opt.iteration or stopping):
                save(step)
            if stopping:
                raise StopRequested
    except StopRequested:
        progress.close()
        # No rank leaves (and makes torchrun stop the others) before rank 0 has saved.
        distributed.barrier()
        return report_stop(stopping, step, main_rank)
    except (RuntimeError, ConnectionError) as error:
        # A worker killed while it handed a batch over (its shared memory's file descriptor) leaves a
        # ConnectionError rather than torch's 'DataLoader worker ... exited' RuntimeError.
        workers_gone = isinstance(error, ConnectionError) or 'DataLoader worker' in str(error)
        # Under torchrun the other ranks may wait in a collective: no flush or save without them.
        if not (stop and workers_gone) or distributed.is_distributed():
            raise
        # The loader workers were stopped with this process while it waited for the batch of `step`:
        # the networks hold step - 1, the last completed step.
        progress.close()
        losses.flush(visualizer, model.loss_groups, progress)
        save(step - 1)
        return report_stop(stop[0], step - 1, main_rank)
    finally:
        progress.close()
        visualizer.close()
        # Released while child_exited still guards SIGCHLD: loader workers stopped with this process may
        # be reaped any moment now, and torch's own handler, put back after this, raises when they are.
        lock.release()
    return None


if __name__ == '__main__':
    sys.exit(main())
