"""The one module that names the paths of a run folder; every script, tool and report asks it.

    <result_dir>/<dataset>/<folder>/            runs_folder: the runs of one data folder, side by side
      <name>/                                   run_folder, run_in: everything one run writes
        opt.txt                                 options_file          (train.py)
        checkpoints/iter_0000100.pt             checkpoint_path, list_checkpoints
        loss_log.csv, samples/step_0000100.png  loss_log, sample_path
        test/<split>/                           split_folder(run, 'test', split)  (test.py)
            prob/ masks/ overlays/ translation/ cam/ NAME.png      image_path(split_dir, kind, name)
            metrics.csv, summary.json           metrics_path, summary_path
        test/selection.json                     test_record_path
        crf/<split>/ (as test/, without prob/), crf/val_grid.json, crf/selection.json      (crf.py)
        pseudo/A/{prob,masks,confidence}/NAME.png, pseudo/B/masks/NAME.png, pseudo/summary.json  (pseudo.py)
        index.html                              report_path           (test.py, crf.py)
        benchmark_train.json, benchmark_steps.json   benchmark_timing_path, benchmark_steps_path (tools/benchmark.py)
        stage2_chain.json                       stage2_chain_path     (start_train.sh's stage 2)
        run.lock                                util/run_lock.py (below records: it names its own file)
      <name>/ of pipeline.py: pipeline.json, steps.json, stage1.pt, cascade.pt, release.pt (default --out);
      its steps' runs beside it: <name>_stage1/, <name>_r1/, ..., <name>_release/   pipeline_run_name
"""
import glob
import os
import re
from typing import List, Optional, Tuple

CHECKPOINT_PATTERN = re.compile(r'iter_(\d+)\.pt$')
STAGES = ('test', 'crf', 'pseudo')  # the output folder of each of these scripts, named after it
SELECTION_RECORD = 'selection.json'
SUMMARY = 'summary.json'
PIPELINE_RECORD = 'pipeline.json'
PIPELINE_SNAPSHOT = 'steps.json'


def runs_folder(result_dir: str, dataset: str, folder: str) -> str:
    """<result_dir>/<dataset>/<folder>: where the runs on one data folder lie side by side."""
    return os.path.join(result_dir, dataset, folder)


def run_in(runs: str, name: str) -> str:
    """The run ``name`` among the runs of ``runs`` (a runs_folder)."""
    return os.path.join(runs, name)


def run_folder(result_dir: str, dataset: str, folder: str, name: str) -> str:
    """<result_dir>/<dataset>/<folder>/<name>: the folder of everything a run writes."""
    return run_in(runs_folder(result_dir, dataset, folder), name)


def options_file(run: str) -> str:
    """train.py's options, as format_options prints them."""
    return os.path.join(run, 'opt.txt')


def checkpoints_folder(run: str) -> str:
    return os.path.join(run, 'checkpoints')


def checkpoint_path(run: str, step: int) -> str:
    """The checkpoint train.py saves at ``step`` (zero-padded, so names sort by step)."""
    return os.path.join(checkpoints_folder(run), f'iter_{step:07d}.pt')


def list_checkpoints(run: str) -> List[Tuple[int, str]]:
    """[(step, path)] of the run's checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(checkpoints_folder(run), 'iter_*.pt')):
        match = CHECKPOINT_PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def samples_folder(run: str) -> str:
    return os.path.join(run, 'samples')


def sample_path(run: str, step: int) -> str:
    """The grid of training images and maps saved at ``step``."""
    return os.path.join(samples_folder(run), f'step_{step:07d}.png')


def loss_log(run: str) -> str:
    """train.py's losses, one CSV row per logged step (reporting/visualizer.py writes it)."""
    return os.path.join(run, 'loss_log.csv')


def stage_folder(run: str, stage: str) -> str:
    """What test.py, crf.py or pseudo.py (``stage``: one of STAGES) writes for the run."""
    return os.path.join(run, stage)


def split_folder(run: str, stage: str, split: str) -> str:
    """test.py's or crf.py's outputs of one split: <run>/<stage>/<split>."""
    return os.path.join(stage_folder(run, stage), split)


def image_folder(split_dir: str, kind: str) -> str:
    """One kind of per-image PNG of a split (or of a pseudo/<domain> folder): prob, masks, overlays,
    translation, cam, confidence."""
    return os.path.join(split_dir, kind)


def image_path(split_dir: str, kind: str, name: str) -> str:
    return os.path.join(image_folder(split_dir, kind), name + '.png')


def metrics_path(split_dir: str) -> str:
    return os.path.join(split_dir, 'metrics.csv')


def summary_path(folder: str) -> str:
    """The summary.json of a split folder or of the pseudo folder."""
    return os.path.join(folder, SUMMARY)


def test_record_path(run: str) -> str:
    """test.py's decision (records/record_io.py reads and checks it)."""
    return os.path.join(stage_folder(run, 'test'), SELECTION_RECORD)


def crf_record_path(run: str) -> str:
    """crf.py's decision."""
    return os.path.join(stage_folder(run, 'crf'), SELECTION_RECORD)


def val_grid_path(run: str) -> str:
    """Every CRF combination crf.py scored on val."""
    return os.path.join(stage_folder(run, 'crf'), 'val_grid.json')


def pseudo_folder(run: str) -> str:
    return stage_folder(run, 'pseudo')


def pseudo_prob_path(pseudo_dir: str, name: str) -> str:
    """The calibrated stage-1 map pseudo.py refines for lesion (A) image ``name``."""
    return image_path(os.path.join(pseudo_dir, 'A'), 'prob', name)


def pseudo_mask_paths(pseudo_dir: str, domain: str, image: str) -> Tuple[str, Optional[str]]:
    """(mask, confidence) pseudo.py writes for training image ``image`` of ``domain`` ('A' or 'B'); a normal
    (B) image has no confidence map."""
    name = os.path.splitext(os.path.basename(image))[0]
    domain_dir = os.path.join(pseudo_dir, domain)
    return (image_path(domain_dir, 'masks', name),
            image_path(domain_dir, 'confidence', name) if domain == 'A' else None)


def report_path(run: str) -> str:
    return os.path.join(run, 'index.html')


def benchmark_timing_path(run: str) -> str:
    """What tools/benchmark.py measured of a training it ran."""
    return os.path.join(run, 'benchmark_train.json')


def benchmark_steps_path(run: str) -> str:
    """tools/benchmark.py's record of the test.py, crf.py and pseudo.py steps it ran on a run."""
    return os.path.join(run, 'benchmark_steps.json')


def stage2_chain_path(run: str) -> str:
    """The record of start_train.sh's stage-2 chain (workflow/stage2_chain.py) started from stage-1 run ``run``."""
    return os.path.join(run, 'stage2_chain.json')


def pipeline_run_name(name: str, suffix: str) -> str:
    """The run of pipeline ``name``'s steps ``suffix`` (stage1, r1, ..., release), beside its folder."""
    return f'{name}_{suffix}'


def pipeline_record_path(pipeline: str) -> str:
    """pipeline.py's record of its steps, in the pipeline's folder (records/pipeline_record.py)."""
    return os.path.join(pipeline, PIPELINE_RECORD)


def pipeline_snapshot_path(pipeline: str) -> str:
    """What the released file keeps under 'pipeline' (the recipe, the steps' records)."""
    return os.path.join(pipeline, PIPELINE_SNAPSHOT)


def pipeline_file(pipeline: str, kind: str) -> str:
    """A weights file pipeline.py writes in its folder: ``kind`` stage1, cascade or release (--out's default)."""
    return os.path.join(pipeline, f'{kind}.pt')
