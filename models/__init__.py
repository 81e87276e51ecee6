"""Model registry: ``--model NAME`` loads ``models/NAME_model.py`` and its ``*Model`` class.

A new model or baseline is one new file; nothing here needs editing.
"""
import glob
import importlib
import inspect
import os

from .base_model import BaseModel


def find_model_class(name):
    """The BaseModel subclass defined in models/<name>_model.py."""
    try:
        module = importlib.import_module(f'models.{name}_model')
    except ModuleNotFoundError as error:
        if error.name != f'models.{name}_model':
            raise
        raise SystemExit(f"error: unknown --model {name!r}: there is no models/{name}_model.py") from None
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, BaseModel) and cls is not BaseModel and cls.__module__ == module.__name__:
            return cls
    raise SystemExit(f"error: models/{name}_model.py defines no BaseModel subclass")


def create_model(opt):
    """Instantiate the model named by ``opt.model``."""
    return find_model_class(opt.model)(opt)


def model_names():
    """The names --model takes: one per models/<name>_model.py, in name order."""
    paths = glob.glob(os.path.join(os.path.dirname(__file__), '*_model.py'))
    return sorted(name for name in (os.path.basename(path)[:-len('_model.py')] for path in paths) if name != 'base')


def model_classes():
    """{name: model class} of every --model, in name order."""
    return {name: find_model_class(name) for name in model_names()}


def all_map_modes():
    """Every map mode some model's ``infer`` returns (a checkpoint or weights file picks the model
    only after the options are parsed)."""
    return tuple(dict.fromkeys(mode for cls in model_classes().values() for mode in cls.map_modes))
