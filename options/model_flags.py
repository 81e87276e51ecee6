"""What the models declare for the command line (models/NAME_model.py): their flags, their defaults per dataset
and for stage 2, and their map modes. A new model's flags need no edit here."""
from evaluation.inference import available_map_modes
from models import find_model_class, model_classes

# Stage 2 trains this model on the stage-1 pseudo-masks, with its own ``train_defaults`` over the preset's.
STAGE2_MODEL = 'seg'


def add_model_flags(parser, groups):
    """Every model's flags (``modify_commandline_options``), into ``groups`` ('network', 'schedule') or
    groups of their own."""
    for cls in model_classes().values():
        cls.modify_commandline_options(parser, groups)


def stage2_defaults():
    """train.py's defaults in stage 2: --model and that model's ``train_defaults``."""
    return dict(model=STAGE2_MODEL, **find_model_class(STAGE2_MODEL).train_defaults)


def dataset_default_keys():
    """The flags some model fills per dataset."""
    return {key for cls in model_classes().values() for values in cls.dataset_defaults.values() for key in values}


def dataset_defaults(dataset, given):
    """{flag: value} of every model's stage-1 defaults on ``dataset``. A model without defaults for it lends its
    ``fallback_dataset``'s and says so, naming those of its flags not ``given``."""
    values = {}
    for cls in model_classes().values():
        if not cls.dataset_defaults:
            continue
        own = cls.dataset_defaults.get(dataset)
        chosen = own or cls.dataset_defaults[cls.fallback_dataset]
        unset = [key for key in chosen if key not in given]
        if own is None and unset:
            # A dataset of the user's own: say which values it gets, rather than choose them silently.
            print(f'note: --dataset {dataset} has no {cls.dataset_defaults_name} of its own; using '
                  f"{cls.fallback_dataset}'s for " + ', '.join(f'--{key} {chosen[key]:g}' for key in unset)
                  + ' (set them, e.g. in a recipe)')
        values.update(chosen)
    return values


def dataset_default_texts():
    """{flag: what --help says fills it}: 'ISIC 5, BraTS and others 10' or '1 on every dataset'."""
    texts = {}
    for cls in model_classes().values():
        table = cls.dataset_defaults
        for key, value in table.get(cls.fallback_dataset, {}).items():
            others = [f'{name} {values[key]}' for name, values in table.items() if values[key] != value]
            texts[key] = (', '.join(others + [f'{cls.fallback_dataset} and others {value}']) if others
                          else f'{value} on every dataset')
    return texts


def map_mode_help():
    """--map_mode's help: each model's map modes, as the model describes them."""
    listed = '; '.join(f"{name}: {cls.map_modes_help or ', '.join(available_map_modes(cls.map_modes))}"
                       for name, cls in model_classes().items())
    return f"lesion map, one of the model's modes ({listed}), or auto (chosen on val)"
