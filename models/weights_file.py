"""Reading a checkpoint or released-weights file and building its model: the one place every script
and tool does it.

Files are read with ``torch.load(weights_only=True)``: a file can hold tensors, numbers, strings and
containers of them, never code, so a crafted or planted file cannot run anything when it is opened.
"""
import argparse

from . import create_model, find_model_class
from .base_model import CHECKPOINT_FORMAT, CheckpointError, torch_load_safely

# The released datasets: weights of one applied to the other is a mistake; any other name is a
# user's own dataset, served with a note.
RELEASED_DATASETS = ('ISIC', 'BraTS')


def read_state(path):
    """The dict stored in a checkpoint or weights file; exit with one line if it is not one of ours."""
    try:
        state = torch_load_safely(path)
    except FileNotFoundError:
        raise SystemExit(f'error: {path} not found; train first (bash start_train.sh) or pass --weights FILE') from None
    except CheckpointError as error:
        raise SystemExit(f'error: {error}') from None
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise SystemExit(f'error: {path} is not a CLTNet-Seg checkpoint or weights file; '
                         f'pass one written by train.py or from weights/')
    return state


def model_options(opt, state):
    """A copy of ``opt`` with the architecture stored in ``state`` (``opt`` itself is left as it is)."""
    return argparse.Namespace(**{**vars(opt), **state['architecture']})


def serving_state(state, map_mode):
    """``state`` cut to the one stage of a two-stage file that gives ``map_mode`` (``stage_state`` of its
    model class: that stage's networks, architecture and training options), else ``state`` itself."""
    stage_state = getattr(find_model_class(state['architecture']['model']), 'stage_state', None)
    return stage_state(state, map_mode) if map_mode and stage_state else state


def build_model(opt, state, source, serve_map=None):
    """The test-time model with the architecture stored in ``state``, loaded from it; its options
    (``model.opt``) are ``opt`` with that architecture. With ``serve_map``, a two-stage file builds only
    the stage that gives that map, whose image-level score is then that stage's own."""
    state = serving_state(state, serve_map)
    model = create_model(model_options(opt, state))
    try:
        model.load_state_dict(state, source=source)
    except CheckpointError as error:
        raise SystemExit(f'error: {error}') from None
    model.train(False)
    return model


def load_model(opt, path, serve_map=None):
    """The model to serve from checkpoint or weights file ``path`` (only the stage giving ``serve_map``,
    see ``build_model``); None (a model that needs no checkpoint, e.g. otsu) builds it from the options."""
    if path is None:
        model = create_model(opt)
        model.train(False)
        return model
    return build_model(opt, read_state(path), path, serve_map)


def check_dataset(state, dataset, source, allow_other):
    """Refuse weights of one released dataset used on the other (unless ``allow_other``); a dataset of
    another name is a user's own and only gets a note."""
    trained_on = (state.get('options') or {}).get('dataset')
    if trained_on is None or trained_on == dataset:
        return
    if dataset in RELEASED_DATASETS and not allow_other:
        raise SystemExit(f'error: {source} was trained on {trained_on}, not {dataset}; pass the {dataset} weights '
                         f'(weights/{dataset}.pt), or --allow_other_dataset True to apply it anyway')
    print(f'note: {source} was trained on {trained_on}; applying it to {dataset}')


# What a stored selection needs to turn a map into a mask (the CRF is optional).
SELECTION_KEYS = ('map_mode', 'binarize', 'threshold', 'postprocess')


def stored_choices(state, map_mode='auto'):
    """The complete choices a file stores for ``map_mode`` ('auto': the file's own): its selection, or, asked
    for a map of a two-stage file's stage 1, the stage-1 file's own; None when it holds none for that map (a
    training checkpoint, an older file), so they are chosen on val."""
    for selection in (state.get('selection'), (state.get('stage1') or {}).get('selection')):
        if (isinstance(selection, dict) and all(key in selection for key in SELECTION_KEYS)
                and map_mode in ('auto', selection['map_mode'])):
            return selection
    return None


def stored_selection(state, source):
    """The choices stored in a weights file (map mode, binarisation, threshold, post-processing, and the
    CRF and image-level gate when chosen); exit with one line for a file without them."""
    selection = state.get('selection')
    if not isinstance(selection, dict):
        raise SystemExit(f'error: {source} holds no stored choices (map, threshold, CRF): it is a training checkpoint '
                         f'or an older file; export one with python -m tools.export_weights --run RUN --out FILE after '
                         f'test.py and crf.py, or pass a file from weights/')
    missing = [key for key in SELECTION_KEYS if key not in selection]
    if missing:
        raise SystemExit(f'error: {source} was written by an older version (its stored choices lack '
                         f'{", ".join(missing)}); export it again with python -m tools.export_weights, '
                         'or pass a file from weights/')
    return selection
