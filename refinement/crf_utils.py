"""Dense-CRF refinement of lesion probability maps (pydensecrf2's ``pydensecrf.densecrf``).

One image: ``dense_crf(raw, prob, params) -> bool mask``. Many images: ``refine_many`` (image and map
files) or ``refine_arrays`` (in memory) in worker processes. Parameter choice on val: ``param_grid``
and ``search_params`` (mean DI, ties -> earlier; exact pruning of combos that can no longer win), keyed for
reuse by ``search_digest``.

The maps are calibrated (0.5 = test.py's decision), so the unary term is fg = p, bg = (1 - p)^alpha
as in the CAM+CRF literature (AffinityNet/PSA): alpha > 1 lets the pairwise terms grow the lesion.
Spatial widths (``sxy``, ``gauss_sxy``) are given in pixels of a 256-px image. An image whose longer
side is above 256 px is refined (colour model, CRF and post-processing) on a copy shrunk to a 256-px
longer side, the scale the parameters were chosen at, and the mask is brought back to its size; a
smaller image is refined as it is, with the widths scaled by its longer side. At full resolution the
same parameters erased a 4288 x 2848 photograph's lesion (DI 0.74 -> 0.00, 28 s an image).

Two steps around the CRF are parameters too, chosen on val with the rest: ``colour`` adds the image's
own lesion-against-skin colour model to the map first (refinement/colour_model.py), and ``postprocess`` cleans
the CRF's mask with one of evaluation/postprocess.py's rules (the CRF can grow the lesion into a marker or a
ruler beside it, which test.py's own post-processing had removed).
"""
import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import numpy as np
import pydensecrf.densecrf as dcrf
from PIL import Image

from data.image_io import ImageReadError, PIL_READ_ERRORS, read_image, read_mask, resize_mask
from refinement.colour_model import add_colour_evidence
from evaluation.metrics import confusion_counts, scores_from_counts
from evaluation.postprocess import POSTPROCESSING, foreground_mask, postprocess
from util.progress import progress_bar
from records.record_io import file_sha256
from util.shutdown import init_pool_worker

REFERENCE_SIDE = 256
PROB_SCALE = 65535
# Probabilities are clipped away from 0 so that -log stays finite.
MIN_PROB = 1e-5
# Fork starts workers in milliseconds and shares the imported modules; spawn is the portable fallback.
START_METHOD = 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters: unary exponent ``alpha``, bilateral ``sxy``/``srgb``/``bi_compat``,
    Gaussian ``gauss_sxy``/``gauss_compat``, ``n_iter`` mean-field iterations, the weight ``colour`` of
    the per-image colour model added to the map before the CRF (0: none), and the ``postprocess`` rule
    applied to the CRF's mask."""
    alpha: float = 1.0
    sxy: float = 40.0
    srgb: float = 13.0
    bi_compat: float = 5.0
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    n_iter: int = 10
    colour: float = 0.0
    postprocess: str = 'none'

    def __post_init__(self):
        # Coerce here, so values from text, JSON or code compare, hash and serialise alike.
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, f.type(getattr(self, f.name)))
            except (TypeError, ValueError):
                raise ValueError(f'CRF parameter {f.name} must be {f.type.__name__}, '
                                 f'got {getattr(self, f.name)!r}') from None
        for name in ('alpha', 'sxy', 'srgb', 'gauss_sxy'):
            if not getattr(self, name) > 0:
                raise ValueError(f'CRF parameter {name} must be > 0, got {getattr(self, name)}')
        for name in ('bi_compat', 'gauss_compat', 'colour'):
            if not getattr(self, name) >= 0:
                raise ValueError(f'CRF parameter {name} must be >= 0, got {getattr(self, name)}')
        if self.n_iter < 1:
            raise ValueError(f'CRF parameter n_iter must be >= 1, got {self.n_iter}')
        if self.postprocess not in POSTPROCESSING:
            raise ValueError(f'CRF parameter postprocess must be one of {", ".join(POSTPROCESSING)}, '
                             f'got {self.postprocess!r}')

    @classmethod
    def from_dict(cls, values):
        """Build from a dict (e.g. a stored ``selection['crf']``); unknown keys raise ValueError."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f'unknown CRF parameter {", ".join(map(repr, unknown))} '
                             f'(known: {", ".join(known)})')
        return cls(**values)

    def as_dict(self):
        """The parameters as a JSON-ready dict."""
        return asdict(self)


def parse_crf_params(text):
    """'alpha=2,sxy=40,...' -> CRFParams (unnamed keys keep their defaults); ValueError when malformed."""
    values = {}
    for item in filter(None, (part.strip() for part in text.split(','))):
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'expected key=value in CRF parameters, got {item!r} (e.g. alpha=2,sxy=40)')
        values[key.strip()] = value.strip()
    return CRFParams.from_dict(values)


# Colour-model weights offered to val: on ISIC val (release r3) DI after the CRF and test.py's
# post-processing was 0.810 / 0.826 / 0.831 for 0 / 1 / 2, and a weight of 3 was worse than 2 before the CRF.
COLOUR_WEIGHTS = (0, 1, 2)


def param_grid(postprocess='none'):
    """The val search space: CRFParams over alpha, (sxy, srgb), bilateral compat, n_iter, the colour
    weight, and post-processing of the CRF's mask: none or ``postprocess`` (test.py's val choice).

    Milder settings come first, so they win ties. Combos differing only in n_iter or postprocess share
    one CRF run, so the grid costs len(COLOUR_WEIGHTS) * 24 CRFs per image.
    """
    widths = ((20, 10), (40, 13), (80, 13), (40, 25))
    posts = tuple(dict.fromkeys(('none', postprocess)))
    return [CRFParams(alpha=alpha, sxy=sxy, srgb=srgb, bi_compat=compat, n_iter=n_iter, colour=colour,
                      postprocess=post)
            for colour, alpha, (sxy, srgb), compat, n_iter, post
            in itertools.product(COLOUR_WEIGHTS, (1, 2, 4), widths, (3, 10), (5, 10), posts)]


def read_prob(path):
    """16-bit PNG written by test.py -> float32 H x W probabilities in [0, 1]."""
    try:
        with Image.open(path) as img:
            img.load()
            values = np.asarray(img)
    except FileNotFoundError:
        raise ImageReadError(path, 'probability map not found') from None
    except PIL_READ_ERRORS as err:
        raise ImageReadError(path, f'not a readable PNG ({type(err).__name__}: {err})') from None
    if values.ndim != 2 or values.dtype.itemsize < 2:
        raise ImageReadError(path, f'expected a 16-bit gray probability map, got {img.mode} {values.shape}')
    return (values.astype(np.float32) / PROB_SCALE).clip(0.0, 1.0)


def load_pair(image_path, prob_path):
    """(uint8 H x W x 3 image, float32 H x W probabilities); ValueError when their sizes differ."""
    raw, prob = read_image(image_path), read_prob(prob_path)
    if raw.shape[:2] != prob.shape:
        raise ValueError(f'probability map {prob_path} is {prob.shape[1]}x{prob.shape[0]} but its image '
                         f'{image_path} is {raw.shape[1]}x{raw.shape[0]}: rerun test.py')
    return raw, prob


def unary_energy(prob, alpha):
    """float H x W probabilities -> float32 (2, H*W) energies -log([bg, fg]) with bg = (1 - p)^alpha."""
    fg = np.clip(prob, 0.0, 1.0).astype(np.float32).ravel()
    both = np.stack([(1.0 - fg) ** alpha, fg])
    both /= both.sum(axis=0, keepdims=True)
    return np.ascontiguousarray(-np.log(np.clip(both, MIN_PROB, 1.0)), dtype=np.float32)


def _crf_run(combo):
    """What decides the CRF's marginals: everything but n_iter and the post-processing of the mask."""
    return replace(combo, n_iter=1, postprocess='none')


def work_size(height, width):
    """(height, width) the CRF runs at: the image's own, or shrunk to a REFERENCE_SIDE longer side."""
    scale = REFERENCE_SIDE / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(array, size):
    """uint8 H x W x 3 image or float H x W map -> the same at ``size`` (H, W), bilinear with antialiasing."""
    resized = Image.fromarray(np.ascontiguousarray(array)).resize(size[::-1], Image.BILINEAR)
    return np.asarray(resized, dtype=array.dtype)


def _crf_masks(raw, prob, combos):
    """Masks (bool H x W) for each CRFParams in ``combos``, in order, outside the foreground 0; refined at
    ``work_size`` and brought back to the image's size."""
    size = prob.shape
    small = work_size(*size)
    if small == size:
        return _crf_masks_at_scale(raw, prob, combos)
    masks = _crf_masks_at_scale(_shrink(raw, small), _shrink(prob.astype(np.float32), small), combos)
    foreground = foreground_mask(raw)
    return [resize_mask(mask, size) & foreground for mask in masks]


def _crf_masks_at_scale(raw, prob, combos):
    """``_crf_masks`` at the image's own size.

    Combos that differ only in ``n_iter`` or ``postprocess`` share one CRF: its mean field is stepped
    once up to the largest n_iter and read off at each requested count (the same numbers as
    ``inference(n)``), and each post-processing is applied to that mask.
    """
    height, width = prob.shape
    scale = max(height, width) / REFERENCE_SIDE
    foreground = foreground_mask(raw)
    if not foreground.any():  # an all-black image (a slice outside the head): nothing can be lesion
        return [np.zeros(prob.shape, bool) for _ in combos]
    # A fresh writable copy: the binding rejects read-only buffers (e.g. arrays viewing PIL images).
    rgb = np.array(raw, dtype=np.uint8, order='C')
    groups = {}
    for combo in combos:
        groups.setdefault(_crf_run(combo), {}).setdefault(combo.n_iter, set()).add(combo)
    maps, unaries, masks = {}, {}, {}
    for run, by_iter in groups.items():
        if run.colour not in maps:
            maps[run.colour] = add_colour_evidence(raw, prob, run.colour, foreground)
        if (run.colour, run.alpha) not in unaries:
            unaries[run.colour, run.alpha] = unary_energy(maps[run.colour], run.alpha)
        crf = dcrf.DenseCRF2D(width, height, 2)
        crf.setUnaryEnergy(unaries[run.colour, run.alpha])
        crf.addPairwiseGaussian(sxy=run.gauss_sxy * scale, compat=run.gauss_compat)
        crf.addPairwiseBilateral(sxy=run.sxy * scale, srgb=run.srgb, rgbim=rgb, compat=run.bi_compat)
        q, tmp1, tmp2 = crf.startInference()
        for step in range(1, max(by_iter) + 1):
            crf.stepInference(q, tmp1, tmp2)
            if step in by_iter:
                marginals = np.asarray(q).reshape(2, height, width)
                # Ties go to background: the CRF must be sure to call a pixel lesion.
                mask = (marginals[1] > marginals[0]) & foreground
                for combo in by_iter[step]:
                    masks[combo] = postprocess(mask, combo.postprocess)
    return [masks[c] for c in combos]


def dense_crf(raw, prob, params):
    """Refine one map: uint8 H x W x 3 image, float H x W probabilities, CRFParams -> bool H x W mask.

    Pixels outside ``foreground_mask(raw)`` are always 0.
    """
    return _crf_masks(raw, prob, [params])[0]


def _dice(pred, gt):
    return scores_from_counts(*confusion_counts(pred, gt))['DI']


def _refine_task(task):
    image_path, prob_path, params = task
    return dense_crf(*load_pair(image_path, prob_path), params)


def _score_task(task):
    """One val image against every combo: (DI of p >= 0.5, [DI after each combo]). An image without a label
    (a normal one) is scored against an empty mask; one the gate emptied keeps its empty mask."""
    image_path, prob_path, label_path, gated, combos = task
    raw, prob = load_pair(image_path, prob_path)
    gt = read_mask(label_path) if label_path else np.zeros(prob.shape, bool)
    if gated:
        empty = _dice(np.zeros_like(gt), gt)
        return empty, [empty] * len(combos)
    return _dice(prob >= 0.5, gt), [_dice(mask, gt) for mask in _crf_masks(raw, prob, combos)]


def _parallel_map(func, tasks, num_workers, desc):
    """[func(t) for t in tasks] in order, on a pool of ``num_workers`` processes (<= 1: this one)."""
    results = []
    with progress_bar(total=len(tasks), desc=desc, unit='img') as bar:
        if num_workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(func(task))
                bar.update()
            return results
        workers = min(num_workers, len(tasks))
        chunk = max(1, len(tasks) // (4 * workers))
        with _pool(workers) as pool:
            for result in pool.imap(func, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
    return results


def refine_many(items, params, num_workers=1, desc='CRF'):
    """Refine many maps in parallel; workers read the files themselves.

    items: sequence of (image_path, prob_path); params: CRFParams; num_workers: processes (<= 1 runs
    here). Returns the bool masks in the order of ``items``, identical to a single process.
    """
    return _parallel_map(_refine_task, [(image, prob, params) for image, prob in items], num_workers, desc)


def crf_pool(num_workers):
    """Worker processes for ``refine_arrays``, kept for a whole run (a context manager); None for
    ``num_workers`` <= 1 (refine in this process). Start it before loading a model: forked workers
    then do not hold the model's memory."""
    return _pool(num_workers) if num_workers > 1 else None


def _pool(workers):
    """CRF worker processes that end with this one (init_pool_worker), even when it is killed outright."""
    return multiprocessing.get_context(START_METHOD).Pool(workers, init_pool_worker, (os.getpid(),))


def _refine_array_task(task):
    return dense_crf(*task)


def refine_arrays(pairs, params, pool=None):
    """Refine in-memory (uint8 H x W x 3 image, calibrated float H x W map) pairs with ``params``, in
    ``pool`` (from ``crf_pool``) or here; returns the bool masks in order."""
    tasks = [(raw, prob, params) for raw, prob in pairs]
    if pool is None or len(tasks) <= 1:
        return [_refine_array_task(task) for task in tasks]
    return pool.map(_refine_array_task, tasks)


class Search(NamedTuple):
    """What ``search_params`` found: ``best`` (index of the first combo of the highest mean), ``means`` (mean
    DI per combo; NaN for a combo pruned once it could no longer win), ``at_most`` (a pruned combo's upper
    bound on its mean, NaN for the others), ``before`` (mean DI of p >= 0.5 before the CRF)."""
    best: int
    means: np.ndarray
    at_most: np.ndarray
    before: float


# Images scored with every combo before the leader is picked; then pruning is checked after each batch.
PROBE_FRACTION, PROBE_MIN = 0.125, 4
# A pruned combo's bound must fall below the leader's mean by more than float rounding of a mean of DIs.
PRUNE_MARGIN = 1e-9


def search_params(items, combos, num_workers=1):
    """Score the combos on the selection set by mean DI; the same choice as scoring every combo on every
    image, with less work (exact pruning; tests/scripts/test_crf.py checks it against the full grid).

    items: sequence of (image_path, prob_path, label_path or None (a normal image), gated (its mask stays
    empty)); combos: list of CRFParams. Returns a Search.

    A combo's DI on an image is at most 1, so after ``done`` of ``n`` images its mean is at most
    (its sum so far + n - done) / n. The leader (the best combo's CRF run on the first images, its siblings
    differing in n_iter or post-processing) is scored on every image first; a combo whose bound falls below
    the leader's mean cannot be the argmax and is dropped. The surviving combos are scored on every image,
    and their means (summed image by image in the same order) are those of the full grid, bit for bit.
    """
    combos, n = list(combos), len(items)
    if not n or not combos:
        raise ValueError('no images or no CRF settings to choose the CRF parameters on')
    scores = np.full((n, len(combos)), np.nan)
    before = np.zeros(n)
    with _search_pool(num_workers, n) as pool, progress_bar(
            total=n, desc=f'CRF search ({len(combos)} settings)', unit='img') as bar:
        def score(rows, columns):
            tasks = [(*items[i], [combos[c] for c in columns]) for i in rows]
            for i, (b, after) in zip(rows, pool.map(_score_task, tasks) if pool else map(_score_task, tasks)):
                before[i], scores[i, columns] = b, after
        probe = list(range(min(n, max(PROBE_MIN, int(np.ceil(n * PROBE_FRACTION))))))
        score(probe, list(range(len(combos))))
        bar.update(len(probe))
        leader_run = _crf_run(combos[int(np.argmax(scores[probe].sum(axis=0)))])
        leaders = [c for c, combo in enumerate(combos) if _crf_run(combo) == leader_run]
        rest = list(range(len(probe), n))
        score(rest, leaders)
        leading = np.mean(scores[:, leaders], axis=0).max()
        alive = [c for c in range(len(combos)) if c not in leaders]
        at_most = np.full(len(combos), np.nan)
        batch = max(1, num_workers) * 2
        for start in range(0, len(rest), batch):
            alive = _prune(scores, alive, at_most, leading, done=len(probe) + start)
            score(rest[start:start + batch], alive)
            bar.update(len(rest[start:start + batch]))
    means = np.mean(scores, axis=0)
    return Search(int(np.argmax(np.where(np.isnan(means), -np.inf, means))), means, at_most, float(np.mean(before)))


def _prune(scores, alive, at_most, leading, done):
    """The combos of ``alive`` that can still reach ``leading`` (their DIs on the first ``done`` images, 1 on
    each other); the bound of each dropped one goes to ``at_most``, its column to NaN."""
    n = scores.shape[0]
    bounds = (scores[:done, alive].sum(axis=0) + (n - done)) / n
    keep = bounds >= leading - PRUNE_MARGIN
    for column, bound in zip(np.asarray(alive)[~keep], bounds[~keep]):
        at_most[column], scores[:, column] = bound, np.nan
    return [column for column, kept in zip(alive, keep) if kept]


@contextlib.contextmanager
def _search_pool(num_workers, n_images):
    """One pool of CRF workers for the whole search (None: score in this process)."""
    if num_workers <= 1 or n_images <= 1:
        yield None
        return
    with _pool(min(num_workers, n_images)) as pool:
        yield pool


# Bump when the CRF, colour model, post-processing or scoring change what a search returns: a stored search
# is reused only for the same inputs and the same code.
SEARCH_VERSION = 1


def search_digest(items, combos):
    """SHA-256 of everything a search's result depends on: each image's, map's and label's bytes, whether the
    gate emptied it, in order; the combos; SEARCH_VERSION and the CRF binding's version."""
    digest = hashlib.sha256(json.dumps({'version': SEARCH_VERSION, 'binding': _binding_version(),
                                        'combos': [c.as_dict() for c in combos]}, sort_keys=True).encode())
    for image, prob, label, gated in items:
        for path in (image, prob, label):
            digest.update(file_sha256(path).encode() if path else b'none')
        digest.update(b'gated' if gated else b'kept')
    return digest.hexdigest()


def _binding_version():
    try:
        return importlib.metadata.version('pydensecrf2')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'
