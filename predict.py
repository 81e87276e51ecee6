"""Apply a weights file to your own images and NIfTI volumes; no labels, no dataset layout.

    python predict.py --weights weights/ISIC.pt --input photos/ --output masks/
    python predict.py --weights weights/BraTS.pt --input BraTS2021/ --output masks/ [--labels BraTS2021/]

Images get <name>_mask.png at their original size, volumes <name>_mask.nii.gz in their own voxel grid;
OUTPUT/predictions.csv has a row per file. ``python predict.py --help`` explains every flag.
"""
import contextlib
import os

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.brats import enough_brain, normalise, slice_image, slice_to_volume
from data.image_io import read_mask, write_png_atomic
from data.labeled_dataset import LabeledDataset, collate_labeled, network_input
from data.layout import header_size
from data.nifti_io import VolumeError, open_volume, read_volume, to_input_grid, voxel_ml, write_volume
from data.predict_inputs import find_inputs, find_labels
from models.weights_file import build_model, check_dataset, read_state, stored_selection
from options.predict_options import parse
from util.crf_utils import CRFParams, crf_pool
from util.hardware import apply_hardware_options
from util.inference import available_map_modes
from util.metrics import SegmentationScores
from util.overlay import draw_overlay
from util.postprocess import largest_component
from util.prediction_table import write_predictions
from util.predictor import Predictor
from util.preflight import check_output_dir

SKIP_HINT = '--skip_bad_images True goes on without such files'


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def check_outputs(opt, inputs):
    """Exit with one line, before any work, when --output lies inside --input, cannot be written, or
    already holds an output of this run (unless --overwrite)."""
    if os.path.isdir(opt.input) and _inside(opt.output, opt.input):
        raise SystemExit(f'error: --output {opt.output} is inside --input {opt.input}; predict.py never writes '
                         f'into its input: pass an --output folder elsewhere')
    if os.path.exists(opt.output) and not os.path.isdir(opt.output):
        raise SystemExit(f'error: --output {opt.output} is a file; pass a folder')
    check_output_dir(opt.output)
    kinds = ['mask'] + ['prob'] * opt.save_prob + ['overlay'] * opt.save_overlay
    planned = [item.output(opt.output, what) for item in inputs for what in kinds
               if not (what == 'overlay' and item.kind == 'volume')] + [os.path.join(opt.output, 'predictions.csv')]
    existing = [path for path in planned if os.path.exists(path)]
    if existing and not opt.overwrite:
        more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        raise SystemExit(f'error: {existing[0]} exists{more}; pass --overwrite True to replace it, or another --output')


def _size(path, kind):
    """(H, W) of an image or (X, Y, Z) of a volume from its header, else a one-line problem (str)."""
    if kind == 'image':
        size, problem = header_size(path)
        return str(problem) if problem else size[::-1]
    try:
        return open_volume(path).shape[:3]
    except VolumeError as error:
        return str(error)


def check_inputs(inputs, labels, skip_bad):
    """{input path: its ``skipped`` row} for the files whose header cannot be read; exit when a label cannot be
    read or its size differs from its input's."""
    skipped = {}
    for item in inputs:
        size = _size(item.path, item.kind)
        if isinstance(size, str):
            skipped[item.path] = skipped_row(item, size, skip_bad)
        elif item.path in labels:
            label_size = _size(labels[item.path], item.kind)
            if isinstance(label_size, str):
                raise SystemExit(f'error: label {label_size}')
            if label_size != size:
                raise SystemExit(f'error: label {labels[item.path]} is {label_size} but {item.path} is {size}; a '
                                 f'label must have its input\'s size')
    return skipped


def skipped_row(item, problem, skip_bad):
    """The predictions.csv row of a file left out for ``problem`` (one line); exit with it unless ``skip_bad``."""
    if not skip_bad:
        raise SystemExit(f'error: {problem} ({SKIP_HINT})')
    return {'file': item.path, 'kind': item.kind, 'status': f'skipped: {problem}'}


def stored_choices(opt, state):
    """(rule, CRFParams or None) stored in the weights file; None also with --crf False."""
    rule = stored_selection(state, opt.weights)
    if not opt.crf:
        return rule, None
    if not rule.get('crf'):
        print(f'note: {opt.weights} stores no CRF; masks are the stored threshold and post-processing alone')
        return rule, None
    return rule, CRFParams.from_dict(rule['crf'])


def _row(item, opt, mask, score, gt, voxel=None):
    """predictions.csv row of one written mask (scored against its label ``gt`` unless it is None)."""
    row = {'file': item.path, 'kind': item.kind, 'status': 'ok', 'mask': item.output(opt.output, 'mask'),
           'lesion_score': score, 'lesion': int(mask.any()), 'lesion_px': int(mask.sum()),
           'lesion_fraction': float(mask.mean()), 'lesion_ml': mask.sum() * voxel if voxel else None}
    if gt is not None:
        row.update(SegmentationScores().add(item.name, mask, gt))
    return row


def predict_images(items, opt, predictor, model, label_paths, bar):
    """Stream ``items`` (images) through the network, rule and CRF a batch at a time; yields their rows."""
    by_path = {item.path: item for item in items}
    dataset = LabeledDataset([(item.path, None) for item in items], model.opt.img_size, model.opt.img_ch,
                             report_unreadable=True)
    loader = DataLoader(dataset, batch_size=opt.batch_size, num_workers=opt.num_workers, collate_fn=collate_labeled)
    for batch in loader:
        for bad in batch['unreadable']:  # a file whose header read but whose pixels do not decode
            yield skipped_row(by_path[bad['path']], bad['unreadable'], opt.skip_bad_images)
            bar.update()
        if batch['image'] is None:
            continue
        raws = [raw.numpy() for raw in batch['raw']]
        predictions = predictor.decide(batch['image'], raws)
        predictor.refine(raws, predictions)
        for path, raw, prediction in zip(batch['path'], raws, predictions):
            item = by_path[path]
            gt = read_mask(label_paths[path]) if path in label_paths else None
            write_png_atomic(item.output(opt.output, 'mask'), prediction.mask.astype(np.uint8) * 255)
            if opt.save_prob:
                write_png_atomic(item.output(opt.output, 'prob'), np.round(prediction.prob * 65535).astype(np.uint16))
            if opt.save_overlay:
                write_png_atomic(item.output(opt.output, 'overlay'), draw_overlay(raw, prediction.mask, gt))
            yield _row(item, opt, prediction.mask, prediction.score, gt)
            bar.update()


def predict_volume(item, opt, predictor, model, label_path):
    """Predict the axial slices of one volume that hold enough brain, stack the masks back into its voxel
    grid (other slices empty), write them; returns its row."""
    image = open_volume(item.path)
    voxels = read_volume(image)
    scaled = normalise(voxels)
    slices = np.flatnonzero(enough_brain(voxels, opt.min_brain_frac))
    raws = [slice_image(scaled, z) for z in slices]
    predictions = []
    for start in tqdm(range(0, len(raws), opt.batch_size), desc=os.path.basename(item.path), unit='batch',
                      leave=False, dynamic_ncols=True):
        chunk = raws[start:start + opt.batch_size]
        images = torch.stack([network_input(raw, model.opt.img_size, model.opt.img_ch) for raw in chunk])
        predictions += predictor.decide(images, chunk)
    predictor.refine(raws, predictions)
    mask, prob = np.zeros(scaled.shape, bool), np.zeros(scaled.shape, np.float32)
    for z, prediction in zip(slices, predictions):
        mask[:, :, z] = slice_to_volume(prediction.mask, scaled.shape[:2])
        prob[:, :, z] = slice_to_volume(prediction.prob, scaled.shape[:2])
    if opt.largest_3d:
        mask = largest_component(mask)
    mask = to_input_grid(mask, image)
    write_volume(item.output(opt.output, 'mask'), mask.astype(np.uint8), image)
    if opt.save_prob:
        write_volume(item.output(opt.output, 'prob'), to_input_grid(prob, image), image)
    scores = [p.score for p in predictions if p.score is not None]
    gt = np.asarray(nib.load(label_path).dataobj).reshape(mask.shape) > 0 if label_path else None
    return _row(item, opt, mask, max(scores) if scores else None, gt, voxel=voxel_ml(image))


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]), predict every input, write predictions.csv."""
    opt = parse(argv)
    apply_hardware_options(opt)
    state = read_state(opt.weights)
    rule, crf = stored_choices(opt, state)
    inputs = find_inputs(opt.input, opt.recursive)
    if any(item.kind == 'volume' for item in inputs):
        check_dataset(state, 'BraTS', opt.weights, opt.allow_other_dataset)
    label_paths = find_labels(inputs, opt.labels) if opt.labels else {}
    check_outputs(opt, inputs)
    skipped = check_inputs(inputs, label_paths, opt.skip_bad_images)
    rows = list(skipped.values())
    todo = [item for item in inputs if item.path not in skipped]
    # The pool forks before the model exists, so its workers do not hold the model's memory.
    with crf_pool(opt.crf_workers if crf else 0) or contextlib.nullcontext() as pool:
        # Only the stage giving the map runs: its image-level score is the one test.py chose the gate on.
        model = build_model(opt, state, opt.weights, serve_map=rule['map_mode'])
        if rule['map_mode'] not in available_map_modes(model.map_modes):
            raise SystemExit(f"error: {opt.weights} stores map {rule['map_mode']!r}, which its model does not give "
                             f"({', '.join(available_map_modes(model.map_modes))}); export it again")
        predictor = Predictor(model, rule, crf, pool)
        images = [item for item in todo if item.kind == 'image']
        with tqdm(total=len(todo), desc='predict', unit='file', dynamic_ncols=True) as bar:
            if images:
                rows += predict_images(images, opt, predictor, model, label_paths, bar)
            for item in (item for item in todo if item.kind == 'volume'):
                try:
                    rows.append(predict_volume(item, opt, predictor, model, label_paths.get(item.path)))
                except VolumeError as error:  # a header that read, voxels that do not
                    rows.append(skipped_row(item, str(error), opt.skip_bad_images))
                bar.update()
    order = {item.path: index for index, item in enumerate(inputs)}
    rows.sort(key=lambda row: order[row['file']])
    table = write_predictions(os.path.join(opt.output, 'predictions.csv'), rows, scored=bool(opt.labels))
    print(table)
    return rows


if __name__ == '__main__':
    main()
