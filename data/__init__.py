"""Datasets, dataset layout checks and image I/O.

``create_dataset(name, **kwargs)`` builds a dataset by name ('weak': one folder of weak-label
training images, 'labeled': an evaluation split with masks), so a new dataset is one new entry.
"""
from data.image_io import (IMG_EXTENSIONS, ImageReadError, list_images, read_image, read_mask,
                           write_json_atomic, write_png_atomic, write_text_atomic)
from data.labeled_dataset import LabeledDataset, collate_labeled
from data.layout import (LayoutError, Problem, SplitFiles, TrainingFiles, check_split,
                         check_training_layout, find_weak_folders, label_path_for)
from data.synthetic import ensure_demo_dataset
from data.weak_dataset import WeakImageDataset

DATASETS = {'weak': WeakImageDataset, 'labeled': LabeledDataset}


def create_dataset(name, **kwargs):
    """Instantiate the dataset registered as ``name`` with ``kwargs`` (see each class for its arguments)."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset type {name!r}; choose one of: {", ".join(sorted(DATASETS))}')
    return DATASETS[name](**kwargs)


__all__ = ['IMG_EXTENSIONS', 'ImageReadError', 'list_images', 'read_image', 'read_mask',
           'write_json_atomic', 'write_png_atomic', 'write_text_atomic', 'LabeledDataset',
           'collate_labeled', 'LayoutError', 'Problem', 'SplitFiles', 'TrainingFiles', 'check_split',
           'check_training_layout', 'find_weak_folders', 'label_path_for', 'ensure_demo_dataset',
           'WeakImageDataset', 'DATASETS', 'create_dataset']
