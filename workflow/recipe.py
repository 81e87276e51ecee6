"""Recipes: one small TOML file per released model holding every flag of every pipeline step.

    [pipeline]  seed, rounds (stage-2 U-Nets, each on the pseudo-masks of the one before), select_few
                (a few-shot folder held out of training and added to val for every choice; '' = val
                alone), from_stage1 (a stage-1 weights file to start from instead of training one),
                hold_out_normals (normal images left out of every stage-2 training, for the image-level
                gate and the CRF to be chosen on; 0 = none), hold_out_group (train.py --hold_out_group: hold
                out whole patients, named by this pattern in the file names)
    [common]    flags given to every script (train.py, test.py, crf.py, pseudo.py); each uses those it has
    [stage1] [stage2] [test] [crf] [pseudo]   flags of that step alone

Everything is checked before anything runs: an unknown section or key, a flag the step's script does
not have, or a flag the pipeline sets itself is refused with one line naming it (``read_recipe``), and so
is a value the step's script would refuse: its parser's types, choices and ranges and the script's own
checks after parsing (``check_step_flags``, on each step's whole command line as the pipeline plans it).
"""
import contextlib
import io
import json
import os
import re
import tomllib

from options import script_flags
from options.crf_options import CRFOptions
from options.pseudo_options import PseudoOptions
from options.test_options import TestOptions
from options.train_options import TrainOptions

PIPELINE_KEYS = {'seed': int, 'rounds': int, 'select_few': str, 'from_stage1': str, 'hold_out_normals': int,
                 'hold_out_group': str}
PIPELINE_DEFAULTS = {'seed': 0, 'rounds': 1, 'select_few': '', 'from_stage1': '', 'hold_out_normals': 0,
                     'hold_out_group': ''}
STEP_OPTIONS = {'stage1': TrainOptions, 'stage2': TrainOptions, 'test': TestOptions, 'crf': CRFOptions,
                'pseudo': PseudoOptions}
# Flags that tie the steps together: the pipeline sets them, so a recipe must not.
PIPELINE_FLAGS = ('dataroot', 'dataset', 'folder', 'name', 'result_dir', 'seed', 'stage', 'pseudo', 'weights',
                  'splits', 'select_few', 'hold_out_normals', 'hold_out_group', 'resume', 'reselect', 'rechoose',
                  'which_iter')


class RecipeError(ValueError):
    """A recipe that cannot be run as written; the message names the file and the key."""


def _flag_names(options_class):
    """The flags (without dashes) that a script's parser has, its model flags included (models/NAME_model.py)."""
    return {opt[2:] for strings, _, _ in script_flags(options_class) for opt in strings
            if opt.startswith('--') and opt != '--help'}


def flag_value(value):
    """A TOML value as a command-line word (booleans in the scripts' True/False spelling)."""
    if isinstance(value, bool):
        return 'True' if value else 'False'
    return str(value)


def read_recipe(path):
    """The recipe at ``path`` as {'pipeline': {...}, 'common': {...}, 'stage1': {...}, ...}, every
    section present; RecipeError on anything that would not run."""
    try:
        with open(path, 'rb') as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise RecipeError(f'{path} not found; pass a recipe such as recipes/ISIC.toml') from None
    except IsADirectoryError:
        raise RecipeError(f'{path} is a folder; pass a recipe file such as recipes/ISIC.toml') from None
    except OSError as error:
        raise RecipeError(f'{path}: cannot be read ({error.strerror}); pass a readable recipe file') from None
    except UnicodeDecodeError as error:
        raise RecipeError(f'{path}: not UTF-8 text (byte {error.start}); save the recipe as UTF-8') from None
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f'{path}: not valid TOML ({error})') from None
    known = ('pipeline', 'common', *STEP_OPTIONS)
    for section, values in raw.items():
        if section not in known:
            raise RecipeError(f'{path}: unknown section [{section}] (known: {", ".join(known)})')
        if not isinstance(values, dict):
            raise RecipeError(f'{path}: {section} must be a [{section}] table of flags')
    recipe = {section: dict(raw.get(section, {})) for section in known}
    for key, value in recipe['pipeline'].items():
        if key not in PIPELINE_KEYS:
            raise RecipeError(f'{path}: unknown key {key!r} in [pipeline] (known: {", ".join(PIPELINE_KEYS)})')
        if not isinstance(value, PIPELINE_KEYS[key]) or isinstance(value, bool):
            raise RecipeError(f'{path}: [pipeline] {key} must be a {PIPELINE_KEYS[key].__name__}, got {value!r}')
    recipe['pipeline'] = {**PIPELINE_DEFAULTS, **recipe['pipeline']}
    if recipe['pipeline']['rounds'] < 1:
        raise RecipeError(f'{path}: [pipeline] rounds must be at least 1, got {recipe["pipeline"]["rounds"]}')
    if recipe['pipeline']['hold_out_normals'] < 0:
        raise RecipeError(f'{path}: [pipeline] hold_out_normals is a number of normal images, got '
                          f'{recipe["pipeline"]["hold_out_normals"]}')
    flags = {section: _flag_names(options) for section, options in STEP_OPTIONS.items()}
    # The scripts share one argument list: a common flag reaches every step, and those without it drop it.
    any_flags = set.union(*flags.values())
    for section in ('common', *STEP_OPTIONS):
        allowed = any_flags if section == 'common' else flags[section]
        for key, value in recipe[section].items():
            if key in PIPELINE_FLAGS:
                raise RecipeError(f'{path}: [{section}] {key} is set by the pipeline itself; remove it '
                                  f'(pipeline.py --help says which flags it sets)')
            if key not in allowed:
                where = 'any script' if section == 'common' else f'the {section} step'
                raise RecipeError(f'{path}: [{section}] {key}: not a flag of {where}; check the spelling '
                                  f'against {_help_command(section)}')
            if isinstance(value, (dict, list)):
                raise RecipeError(f'{path}: [{section}] {key} must be a single value, got {value!r}')
    return recipe


def _help_command(section):
    """Where the flags of ``section`` are listed: its script's --help ([common]: every script's)."""
    if section == 'common':
        return 'python train.py --help (or test.py, crf.py, pseudo.py: [common] reaches all four)'
    return f'python {"train" if section.startswith("stage") else section}.py --help'


def _culprit(recipe, section, message):
    """'[stage2] lr = "fast"': the recipe entry that ``message`` (a script's refusal) names, the step's own
    before [common]'s; '[stage2]' when it names none (a flag the pipeline set, refused with a recipe value)."""
    for where in (section, 'common'):
        for key, value in recipe[where].items():
            if re.search(rf"--{re.escape(key)}\b", message):
                return f'[{where}] {key} = {json.dumps(value)}'
    return f'[{section}]'


def check_step_flags(path, recipe, section, argv):
    """RecipeError naming the recipe entry when the script of step ``argv`` ([SCRIPT, *FLAGS], of recipe
    section ``section``) would refuse its flags: the script's own parse (types, choices, ranges and its
    checks after parsing, none of which touches files) with its output kept from the console."""
    try:
        with contextlib.redirect_stderr(io.StringIO()) as errors, contextlib.redirect_stdout(io.StringIO()):
            STEP_OPTIONS[section]().parse(argv[1:])
    except SystemExit as error:
        lines = errors.getvalue().strip().splitlines() or [str(error.code)]
        message = re.sub(r'^(\S+: )?error: ', '', lines[-1])
        raise RecipeError(f'{path}: {_culprit(recipe, section, message)}: {argv[0]} refuses it: {message}') from None


def step_flags(recipe, section):
    """The command-line words of ``[common]`` then ``[section]`` (a step's own value wins)."""
    merged = {**recipe['common'], **recipe[section]}
    return [word for key, value in merged.items() for word in (f'--{key}', flag_value(value))]


def recipe_relative(path):
    """``path`` as written relative to the current folder (the repository root), for records."""
    return os.path.relpath(path) if os.path.isabs(path) else path
