"""Write stage-1 pseudo-masks of every training image, for stage 2 (``train.py --stage 2``).

    python pseudo.py --dataroot ../shared/datasets --dataset ISIC --weights weights/ISIC.pt --name stage1
    python pseudo.py --dataroot ../shared/datasets --dataset ISIC --name cltnet   # after test.py + crf.py

Each lesion (A) image goes through test.py's val-chosen rule (checkpoint, map mode, threshold,
post-processing; its record test/selection.json) and then the dense CRF with crf.py's val-chosen
parameters (crf/selection.json); with --weights and no such records, those stored in the file. Its
confidence map is 0 on the pseudo-mask's boundary and rises to 1 at ``--boundary_band`` of the image side
from it: boundaries are where stage-1 masks are least reliable. An A image whose pseudo-mask is empty gets
confidence 0 everywhere (stage 1 missed its lesion; an empty target would teach the opposite). Normal (B)
images get empty masks.

Writes <run>/pseudo/A/{prob,masks,confidence}/NAME.png, <run>/pseudo/B/masks/NAME.png and
<run>/pseudo/summary.json (counts, areas, the rule and CRF parameters used, and the pseudo-masks' Dice
on the few-shot images when those labelled training images exist: a check, never used to choose).
"""
import os
import sys

from util.shutdown import exit_quietly_on_ctrl_c

exit_quietly_on_ctrl_c(__name__)  # before the slow imports below (torch: seconds)

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from data.image_io import read_mask, write_json_atomic, write_png_atomic
from data.layout import LayoutError, check_training_layout
from data.pseudo_dataset import few_shot_items
from data.synthetic import make_demo_if_missing
from models.weights_file import load_model, read_state, stored_selection
from options.base_options import loader_args, run_dir
from options.pseudo_options import PseudoOptions
from refinement.crf_utils import CRFParams, refine_many
from refinement.gated_crf import refine_ungated
from util.full_disk import exit_on_full_disk
from util.hardware import apply_hardware_options
from evaluation.inference import predict_split
from evaluation.metrics import SegmentationScores
from util.preflight import check_output_dir
from records.record_io import file_sha256, read_crf_selection, read_test_selection, require_record
from records.run_folder import (crf_record_path, pseudo_folder, pseudo_mask_paths, pseudo_prob_path, summary_path,
                                test_record_path)
from util.run_lock import RunLock
from evaluation.selection import apply_rule, gate_rejects

CHUNK = 64  # images whose full-size maps are held in memory at once


def boundary_confidence(mask, band):
    """0 on the boundary of ``mask`` (bool H x W), rising linearly to 1 at ``band`` pixels from it."""
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    distance = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    return np.clip(distance / band, 0.0, 1.0).astype(np.float32)


def recorded_choices(opt, folder):
    """(rule, CRFParams): test.py's and crf.py's recorded decisions for this run (test/selection.json,
    crf/selection.json), else those stored in --weights; --crf_params overrides the CRF."""
    test_path = test_record_path(folder)
    if os.path.isfile(test_path):
        rule = read_test_selection(test_path, '')
    elif opt.weights:
        rule = dict(stored_selection(read_state(opt.weights), opt.weights), checkpoint=opt.weights)
    else:
        raise SystemExit(f'error: {test_path} not found: run test.py for this run first '
                         f'(python test.py ... --name {opt.name}), or pass --weights FILE')
    if opt.crf_params is not None:
        return rule, opt.crf_params
    crf_path = crf_record_path(folder)
    if os.path.isfile(crf_path):
        record = require_record(crf_path, '')
        stored, source = read_crf_selection(crf_path, '', record)['crf'], crf_path
        if os.path.isfile(test_path) and record.get('test_record_sha256') != file_sha256(test_path):
            raise SystemExit(f'error: {crf_path} refines an earlier decision of test.py than {test_path}: '
                             f'run crf.py for this run again')
    elif rule.get('crf'):
        stored, source = rule['crf'], test_path if os.path.isfile(test_path) else opt.weights
    else:
        raise SystemExit(f'error: {crf_path} not found: run crf.py for this run first (python crf.py ... --name '
                         f'{opt.name}), or pass --crf_params (e.g. alpha=2,sxy=40)')
    try:
        return rule, CRFParams.from_dict(stored)
    except ValueError as error:
        raise SystemExit(f'error: {source}: {error}; run the step that wrote it again, or pass --crf_params') from None


def write_probabilities(model, rule, paths, pseudo_dir, opt):
    """Calibrated stage-1 maps of the A images (p >= 0.5 is the rule's decision) as 16-bit PNGs;
    returns their paths and the set of those whose image the rule's image-level gate emptied."""
    prob_paths, gated = [], set()
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        items = predict_split(model, [(p, None) for p in chunk], f'stage-1 maps {start + len(chunk)}/{len(paths)}',
                              **loader_args(opt))
        for item in items:
            _, calibrated = apply_rule(rule, item['maps'][rule['map_mode']], item['score'])
            path = pseudo_prob_path(pseudo_dir, item['name'])
            write_png_atomic(path, np.round(calibrated * 65535).astype(np.uint16))
            prob_paths.append(path)
            if gate_rejects(rule, item['score']):
                gated.add(path)
    return prob_paths, gated


def few_shot_check(folder_dir, paths_A, masks):
    """Mean scores of the pseudo-masks on the A images that also have a few-shot label (the few-shot
    images are copies of training images, matched by file name), or None."""
    few_root = os.path.join(folder_dir, 'few_sample')
    if not os.path.isdir(few_root):
        return None
    labels = {os.path.basename(item.image): item.mask for name in sorted(os.listdir(few_root))
              for item in few_shot_items(folder_dir, name, weight=1.0)}
    scores = SegmentationScores()
    for path, mask in zip(paths_A, masks):
        if os.path.basename(path) in labels:
            scores.add(os.path.basename(path), mask, read_mask(labels[os.path.basename(path)]))
    return dict(scores.mean(), n_images=len(scores)) if len(scores) else None


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]) and write the run's pseudo-masks, holding the run folder."""
    opt = PseudoOptions().parse(argv)
    folder = run_dir(opt)
    check_output_dir(pseudo_folder(folder))
    with RunLock(folder, 'pseudo.py'), exit_on_full_disk('run pseudo.py again'):
        write_pseudo_masks(opt, folder)


def write_pseudo_masks(opt, folder):
    """Masks and confidence maps of every training image by the run's val-chosen rule and CRF, and the summary."""
    apply_hardware_options(opt)
    torch.manual_seed(opt.seed)
    make_demo_if_missing(opt.dataroot, opt.dataset, opt.folder)
    data_dir = os.path.join(opt.dataroot, opt.dataset, opt.folder)
    try:
        files = check_training_layout(opt.dataroot, opt.dataset, opt.folder, skip_bad=opt.skip_bad_images)
    except LayoutError as error:
        raise SystemExit(f'error: {error}\n(use --skip_bad_images True to go on without the listed files)')
    rule, params = recorded_choices(opt, folder)
    # The chosen map's stage alone: its image-level score is the one the gate was chosen on.
    model = load_model(opt, rule['checkpoint'], serve_map=rule['map_mode'])
    pseudo_dir = pseudo_folder(folder)
    print(f"rule of {opt.name}: map {rule['map_mode']} {rule['binarize']} {rule['threshold']} {rule['postprocess']}; "
          f'CRF {params.as_dict()}')

    prob_paths, gated = write_probabilities(model, rule, files.paths_A, pseudo_dir, opt)
    # A gated image keeps its empty mask, as after crf.py: the CRF would grow one from the map.
    masks = refine_ungated(list(zip(files.paths_A, prob_paths)), [prob in gated for prob in prob_paths],
                           lambda todo: refine_many(todo, params, opt.crf_workers, desc='CRF pseudo-masks'))
    areas, dropped = [], 0
    for path, mask in zip(files.paths_A, masks):
        mask_path, confidence_path = pseudo_mask_paths(pseudo_dir, 'A', path)
        confidence = boundary_confidence(mask, opt.boundary_band * max(mask.shape))
        write_png_atomic(mask_path, mask.astype(np.uint8) * 255)
        write_png_atomic(confidence_path, np.round(confidence * 255).astype(np.uint8))
        dropped += not mask.any()
        areas.append(float(mask.mean()))
    for path in files.paths_B:
        with Image.open(path) as img:
            width, height = img.size
        write_png_atomic(pseudo_mask_paths(pseudo_dir, 'B', path)[0], np.zeros((height, width), np.uint8))

    summary = {'n_A': len(files.paths_A), 'n_B': len(files.paths_B), 'n_A_empty_ignored': dropped,
               'n_A_gated': len(gated),
               'mean_area_A': float(np.mean(areas)), 'selection': rule, 'crf': params.as_dict(),
               'boundary_band': opt.boundary_band, 'few_sample_check': few_shot_check(data_dir, files.paths_A, masks),
               'command': opt.command_line}
    write_json_atomic(summary_path(pseudo_dir), summary)
    check = summary['few_sample_check']
    print(f"pseudo-masks: {len(files.paths_A)} A ({dropped} empty, ignored), {len(files.paths_B)} B (empty); "
          f"mean A area {summary['mean_area_A']:.3f}"
          + (f"; DI {check['DI']:.4f} on the {check['n_images']} few-shot labelled training images" if check else ''))
    print(f'written to {pseudo_dir}; next: python train.py --stage 2 --pseudo {opt.name} ...')


if __name__ == '__main__':
    sys.exit(main())
