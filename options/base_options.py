"""Options shared by train.py, test.py, crf.py and pseudo.py, so one argument list serves all four.

Flag names follow the original CLTNet / U-GAT-IT code. ``--preset`` fills in a group of defaults
(image size, width, loss weights per dataset...); any flag given explicitly overrides the preset.
"""
import argparse
import math
import os
import sys

import torch

from models import model_names
from records.run_folder import run_folder

from .command_line import effective_argv

# The original paper settings (256 px, ch 54, light, n_res 4, 7000 iterations, batch 1).
PAPER_PRESET = dict(img_size=256, ch=54, n_res=4, light=True, iteration=7000, batch_size=1)
# Two CPU cores, about an hour: half the resolution and a narrower network make one iteration
# ~20x cheaper than the paper setting, so the model sees several thousand images instead of ~150.
CPU_PRESET = dict(img_size=128, ch=32, n_res=4, light=True, iteration=3000, batch_size=1)
PRESETS = {'paper': PAPER_PRESET, 'cpu': CPU_PRESET}
# Where the values of the other scripts' flags go while parsing (then dropped).
OTHER_PREFIX = 'other_script_'
# The value, while parsing, of a flag whose default the preset, dataset or stage chooses, until it is chosen.
NOT_GIVEN = object()
# numpy's seeds are unsigned 32-bit numbers.
MAX_SEED = 2 ** 32 - 1
# The smallest image every model takes: the U-Net halves its side 4 times, CLTNet's bottleneck needs 2 x 2.
MIN_IMG_SIZE = 16
# The largest: 8x the paper's 256 px; a CLTNet step at 100000 px would ask for ~171 GB at once.
MAX_IMG_SIZE = 2048
# --num_threads of every script that runs a model (tools/speed_benchmark.py's too); util/hardware.py applies it.
NUM_THREADS_HELP = ('CPU threads for torch (0: one per core not busy with other processes when the script starts, '
                    "at most torch's default; it prints what it chose and why)")


def str2bool(value):
    """Parse the original code's ``True/False`` spelling (and yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ('true', 't', 'yes', 'y', '1'):
        return True
    if lowered in ('false', 'f', 'no', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def resolve_device(name):
    """'auto' -> 'cuda' when a GPU is present, else 'cpu'; a named device is checked."""
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but torch sees no CUDA GPU; use --device auto or cpu")
    return name


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each flag's default once: the value it takes, or what fills it in (``default_text``:
    the preset, the dataset); a default of None or '' is not shown (the help text says what happens)."""

    def _get_help_string(self, action):
        shown = getattr(action, 'default_text', None)
        if shown is not None:
            return f'{action.help} (default: {shown})'
        if action.default in (None, ''):
            return action.help
        return super()._get_help_string(action)


def preset_default_text(key):
    """How the presets fill ``key``: 'cpu preset 128, paper preset 256', or '4 in both presets'."""
    values = {name: preset[key] for name, preset in sorted(PRESETS.items())}
    if len(set(values.values())) == 1:
        return f'{next(iter(values.values()))} in both presets'
    return ', '.join(f'{name} preset {value}' for name, value in values.items())


def add_hardware_arguments(parser):
    """The hardware flags of every script that runs a model (predict.py and those of ``BaseOptions``; crf.py
    only takes them hidden): --device, --num_threads, --keep_freed_memory, --amp, --channels_last, --compile."""
    g = parser.add_argument_group('hardware')
    g.add_argument('--device', default='auto', help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument('--num_threads', type=int, default=0, help=NUM_THREADS_HELP)
    g.add_argument('--keep_freed_memory', type=str2bool, default=True,
                   help='True: glibc malloc keeps freed memory for reuse instead of mapping large '
                        'tensors afresh at every step (~60 000 page faults per cpu-preset step); '
                        'the process then holds its peak memory until it ends')
    g.add_argument('--amp', default='auto', choices=('auto', 'bf16', 'fp16', 'off'),
                   help="mixed precision: auto = bf16 on CPUs with native bf16, else off (on CUDA a batch-1 "
                        "step is launch-bound and autocast only adds casts; bf16 / fp16 force it)")
    g.add_argument('--channels_last', type=str2bool, default=True,
                   help='channels-last memory format for the convolutions (faster on CPU and tensor cores)')
    g.add_argument('--compile', type=str2bool, default=False,
                   help='True: compile every network with torch.compile (needs a C++ compiler on CPU, '
                        'Triton on CUDA; the first steps are slow while it compiles)')


class BaseOptions:
    """Builds the parser; subclasses add their flags in ``add_arguments``."""

    description = 'CLTNet-Seg'
    is_train = False
    # False for a script that builds no model (crf.py): no model, preset, image size or hardware flags.
    runs_a_model = True
    # Preset entries this script takes (train.py: the network's and the schedule's too).
    preset_keys = ('img_size',)
    image_group = 'input size (for a model without checkpoint, e.g. otsu; a checkpoint brings its own)'

    def build_parser(self, accept_others=True):
        """The script's parser; with ``accept_others`` it also takes (and ignores) every flag of the other
        scripts, hidden from --help, so train.py, test.py, crf.py and pseudo.py share one argument list."""
        parser = argparse.ArgumentParser(description=self.description, formatter_class=HelpFormatter)
        parser.register('type', 'bool', str2bool)  # type='bool' for the flags the models declare
        g = parser.add_argument_group('data and run')
        g.add_argument('--dataroot', default='./dataset',
                       help='folder holding <dataset>/<folder>/ (A/B weak folders, val, testA, testB)')
        g.add_argument('--dataset', default='demo',
                       help="dataset name under --dataroot (ISIC, BraTS, ...), one folder name; 'demo' builds "
                            "the embedded synthetic phantom data on first use")
        g.add_argument('--folder', default=None,
                       help='data folder under <dataroot>/<dataset>/, one folder name (default: isic_1, brats_1, '
                            'demo_1 or <dataset lowercased>_1)')
        g.add_argument('--name', default='cltnet',
                       help='run name; outputs go to <result_dir>/<dataset>/<folder>/<name>/')
        g.add_argument('--result_dir', default='results', help='root folder of all run outputs')
        g.add_argument('--num_workers', type=int, default=2, help='data loading worker processes (0 = main process)')
        g.add_argument('--skip_bad_images', type=str2bool, default=False,
                       help='True: leave out unreadable images (and report how many) instead of stopping')
        if self.runs_a_model:
            self.add_model_arguments(g, parser)
        self.add_arguments(parser)
        if accept_others:
            self.add_other_scripts_flags(parser)
        texts = self.default_texts(parser)
        for action in parser._actions:
            if action.dest in texts:
                action.default_text = texts[action.dest]
        return parser

    def add_model_arguments(self, run_group, parser):
        """The flags of a script that builds a model: which model, the preset, the seed, the input size
        (``add_network_arguments``) and the hardware."""
        run_group.add_argument('--model', default='cltnet',
                               help=f"model, one of models/NAME_model.py: {', '.join(model_names())}")
        run_group.add_argument('--preset', choices=sorted(PRESETS), default=None,
                               help="default group: 'paper' = the original settings (256 px, ch 54, 7000 it), 'cpu' "
                                    '= 128 px, ch 32, 3000 it (about an hour on 2 cores). Explicit flags override '
                                    'it (default: paper on CUDA, cpu otherwise)')
        run_group.add_argument('--seed', type=int, default=0,
                               help='random seed (data order, augmentation, initialisation)')
        g = parser.add_argument_group(self.image_group)
        g.add_argument('--img_size', type=int, default=None, help='image side in pixels (divisible by 4)')
        g.add_argument('--img_ch', type=int, default=3, choices=(1, 3), help='image channels')
        self.add_network_arguments(g)
        add_hardware_arguments(parser)

    def add_network_arguments(self, group):
        """Hook for train.py: the flags that shape the networks."""

    def default_texts(self, parser):
        """{dest: what --help says fills it in} for the flags without a fixed default."""
        return {key: preset_default_text(key) for key in self.preset_keys}

    def add_other_scripts_flags(self, parser):
        """Hidden flags for what only the other scripts take; their values never reach ``opt``."""
        from . import script_flags, script_options  # the other scripts' option classes import this module
        for other in script_options():
            if type(self) is other:
                continue
            for option_strings, dest, takes_value in script_flags(other):
                if any(o in parser._option_string_actions for o in option_strings):
                    continue
                kind = {} if takes_value else {'action': 'store_true'}
                parser.add_argument(*option_strings, dest=OTHER_PREFIX + dest,
                                    default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kind)

    def add_arguments(self, parser):
        """Hook for subclasses."""

    def parse(self, argv=None):
        """Parse ``argv`` (default sys.argv[1:]) once, fill in the defaults the preset (dataset, stage) chooses
        for the flags not given, validate and return the namespace."""
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = self.build_parser()
        filled = self.filled_keys() & {action.dest for action in parser._actions}
        # Those flags start as NOT_GIVEN (not as their default, which --help shows): an explicit value wins.
        opt = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(filled, NOT_GIVEN)))
        given = {key for key in filled if getattr(opt, key) is not NOT_GIVEN}
        defaults = {**{key: parser.get_default(key) for key in filled}, **self.chosen_defaults(opt, given)}
        for key in filled - given:
            setattr(opt, key, defaults[key])
        for key in [key for key in vars(opt) if key.startswith(OTHER_PREFIX)]:
            delattr(opt, key)
        opt.is_train = self.is_train
        opt.command_line = ' '.join([os.path.basename(sys.argv[0]) or 'python'] + effective_argv(parser, argv))
        if opt.folder is None:
            opt.folder = default_folder(opt.dataset)
        check_folder_names(parser, opt)
        # Only the flags this script has (test.py: no network flags; crf.py: no model or hardware flags).
        ranges = dict(seed=(0, MAX_SEED), batch_size=(1, None), num_workers=(0, None), num_threads=(0, None),
                      img_size=(MIN_IMG_SIZE, None), ch=(1, None), n_res=(1, None), n_dis=(2, None))
        check_ranges(parser, opt, **{name: bounds for name, bounds in ranges.items() if hasattr(opt, name)})
        if self.runs_a_model:
            if opt.img_size % 4:
                parser.error(f'--img_size must be divisible by 4, got {opt.img_size}')
            if opt.img_size > MAX_IMG_SIZE:
                parser.error(f'--img_size must be at most {MAX_IMG_SIZE} (memory grows with its square; the paper '
                             f'uses 256), got {opt.img_size}')
            opt.device = resolve_device(opt.device)
        self.validate(parser, opt)
        return opt

    def filled_keys(self):
        """The flags whose default ``chosen_defaults`` may choose."""
        return {'preset', *self.preset_keys} if self.runs_a_model else set()

    def chosen_defaults(self, opt, given):
        """{flag: default} chosen from ``opt`` (as parsed; ``given``: the ``filled_keys`` given): the preset's
        (given, else 'paper' on CUDA, 'cpu' otherwise)."""
        if not self.runs_a_model:
            return {}
        preset = opt.preset if 'preset' in given else ('paper' if resolve_device(opt.device).startswith('cuda')
                                                       else 'cpu')
        return dict({key: value for key, value in PRESETS[preset].items() if key in self.preset_keys}, preset=preset)

    def validate(self, parser, opt):
        """Hook for subclasses: extra checks, calling ``parser.error`` on bad values."""


def add_inference_batch_size(group):
    """--batch_size of the scripts that run a trained model over images (test.py, pseudo.py)."""
    group.add_argument('--batch_size', type=int, default=8, help='images per inference batch')


def loader_args(opt):
    """What evaluation.inference.predict_split takes of test.py's and pseudo.py's options."""
    return dict(batch_size=opt.batch_size, num_workers=opt.num_workers, device=opt.device)


# Where the values of --dataset, --folder and --name become folder names.
RUN_FOLDER = 'the run folder is <result_dir>/<dataset>/<folder>/<name>'
DATA_FOLDER = 'the data folder is <dataroot>/<dataset>/<folder>, the runs go to <result_dir>/<dataset>/<folder>'


def folder_name_error(flag, name, where=RUN_FOLDER):
    """The one-line error for a ``flag`` value ``name`` that is not one plain folder name ('', '.', '..', or
    with / or \\: a path joined from it would leave the folder it is joined to), else None. ``where`` says
    which folder the name becomes."""
    if name not in ('', '.', '..') and not any(sep in name for sep in ('/', '\\', os.sep)):
        return None
    return f"{flag} must be one folder name, without / or \\ and not '', '.' or '..' ({where}), got {name!r}"


def check_run_name(parser, flag, name, where=RUN_FOLDER):
    """parser.error unless ``name`` is one folder name (``folder_name_error``)."""
    error = folder_name_error(flag, name, where)
    if error:
        parser.error(error)


def check_folder_names(parser, opt):
    """parser.error unless --dataset, --folder and --name (``opt``'s; None or absent: not given yet) are one
    folder name each, so that what train.py, test.py, crf.py, pseudo.py, pipeline.py and tools/prepare_*.py
    read and write stays inside --dataroot (--out) and --result_dir."""
    for flag, where in (('dataset', DATA_FOLDER), ('folder', DATA_FOLDER), ('name', RUN_FOLDER)):
        value = getattr(opt, flag, None)
        if value is not None:
            check_run_name(parser, f'--{flag}', value, where)


def check_ranges(parser, opt, **ranges):
    """parser.error unless every option named in ``ranges`` (name=(lowest, highest or None)) is unset or a
    finite number in that range: a bad value then stops at parse time, not in a traceback much later."""
    for name, (lowest, highest) in ranges.items():
        value = getattr(opt, name)
        if value is None:
            continue
        if highest is None and not (math.isfinite(value) and value >= lowest):
            parser.error(f'--{name} must be at least {lowest}, got {value}')
        if highest is not None and not lowest <= value <= highest:
            parser.error(f'--{name} must be between {lowest} and {highest}, got {value}')


def default_folder(dataset):
    """The data folder used when --folder is not given (isic_1, brats_1, demo_1, <name>_1)."""
    return {'ISIC': 'isic_1', 'BraTS': 'brats_1'}.get(dataset, f'{dataset.lower()}_1')


def run_dir(opt, name=None):
    """<result_dir>/<dataset>/<folder>/<name>: the folder of everything a run writes (of run ``name``
    beside it when given, e.g. the stage-1 run a stage-2 run reads its pseudo-masks from)."""
    return run_folder(opt.result_dir, opt.dataset, opt.folder, name or opt.name)


def format_options(opt):
    """The options as aligned 'name: value' lines (what is printed and saved as opt.txt)."""
    lines = ['----------------- Options -----------------']
    for key, value in sorted(vars(opt).items()):
        lines.append(f'{key:>22}: {value}')
    lines.append('------------------- End -------------------')
    return '\n'.join(lines)
