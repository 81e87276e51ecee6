"""Tests for options/: presets, per-dataset loss weights, overrides, boolean flags, errors, --help."""
import argparse
import os
import re

import pytest
import torch

import pipeline
import train
from conftest import REPO_ROOT
from models import model_classes, model_names
from models.base_model import BaseModel
from options import model_flags, script_flags, train_options
from options.base_options import CPU_PRESET, format_options, run_dir
from options.crf_options import CRFOptions
from options.pseudo_options import PseudoOptions
from options.test_options import TestOptions
from options.train_options import TrainOptions

PAPER = dict(img_size=256, ch=54, n_res=4, light=True, iteration=7000, batch_size=1)  # the values
WEIGHTS = {'BraTS': dict(adv_weight=1, cycle_weight=10, identity_weight=10, cam_weight=1000, recon_weight=10),
           'ISIC': dict(adv_weight=1, cycle_weight=5, identity_weight=50, cam_weight=1400, recon_weight=10)}


def parse(*argv):
    return TrainOptions().parse(['--device', 'cpu', *argv])


def _subset(opt, keys):
    return {key: getattr(opt, key) for key in keys}


def test_cpu_preset_is_the_default_without_gpu_and_is_smaller_than_paper():
    opt = parse()
    assert opt.preset == 'cpu'
    assert _subset(opt, CPU_PRESET) == CPU_PRESET
    assert opt.img_size % 4 == 0
    assert opt.img_size * opt.ch < PAPER['img_size'] * PAPER['ch']


def test_paper_preset_has_the_original_settings():
    opt = parse('--preset', 'paper')
    assert _subset(opt, PAPER) == PAPER
    assert (opt.lr, opt.weight_decay, opt.decay_flag, opt.n_dis) == (1e-4, 2e-5, True, 6)


@pytest.mark.parametrize('dataset', ['ISIC', 'BraTS'])
@pytest.mark.parametrize('preset', ['cpu', 'paper'])
def test_loss_weights_follow_the_dataset(dataset, preset):
    opt = parse('--preset', preset, '--dataset', dataset)
    assert _subset(opt, WEIGHTS[dataset]) == WEIGHTS[dataset]
    assert opt.folder == {'ISIC': 'isic_1', 'BraTS': 'brats_1'}[dataset]


def test_other_datasets_use_the_brats_weights():
    opt = parse('--dataset', 'demo')
    assert _subset(opt, WEIGHTS['BraTS']) == WEIGHTS['BraTS'] and opt.folder == 'demo_1'


def test_explicit_flags_override_the_preset():
    opt = parse('--preset', 'paper', '--dataset', 'ISIC', '--img_size', '64', '--ch', '8', '--light', 'False',
                '--iteration', '20', '--cam_weight', '7', '--folder', 'isic_2')
    assert (opt.img_size, opt.ch, opt.light, opt.iteration, opt.cam_weight, opt.folder) == \
        (64, 8, False, 20, 7, 'isic_2')
    assert opt.n_res == PAPER['n_res'] and opt.identity_weight == WEIGHTS['ISIC']['identity_weight']
    # Flags given before --preset win as well.
    assert parse('--ch', '8', '--preset', 'paper').ch == 8


@pytest.mark.parametrize('text, value', [('True', True), ('False', False), ('true', True), ('no', False),
                                         ('1', True), ('0', False)])
def test_boolean_flags_accept_true_false(text, value):
    opt = parse('--light', text, '--decay_flag', text, '--resume', text)
    assert opt.light is value and opt.decay_flag is value and opt.resume is value


@pytest.mark.parametrize('argv, expected', [
    (['--img_size', '30'], '--img_size must be divisible by 4, got 30'),
    (['--iteration', '0'], '--iteration must be at least 1, got 0'),
    (['--batch_size', '-1'], '--batch_size must be at least 1, got -1'),
    (['--light', 'maybe'], "expected True or False, got 'maybe'"),
    (['--preset', 'huge'], "invalid choice: 'huge'"),
    (['--degrade_A', '1.5'], '--degrade_A is a probability in [0, 1], got 1.5'),
    (['--degrade_range', '144,72'], "expected 1 <= SMALLEST <= LARGEST, got '144,72'"),
    (['--degrade_range', '72'], "expected two whole numbers as SMALLEST,LARGEST, got '72'"),
])
def test_bad_values_exit_with_a_message(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown without a GPU')
def test_cuda_device_without_gpu_is_a_clear_error():
    with pytest.raises(SystemExit, match='--device cuda asked for, but torch sees no CUDA GPU'):
        TrainOptions().parse(['--device', 'cuda'])


def test_display_env_defaults_to_dataset_folder_and_run_name_and_run_dir(tmp_path):
    opt = parse('--name', 'exp1', '--dataset', 'ISIC', '--result_dir', str(tmp_path))
    assert opt.display_env == 'ISIC_isic_1_exp1' and opt.is_train
    assert run_dir(opt) == str(tmp_path / 'ISIC' / 'isic_1' / 'exp1')
    text = format_options(opt)
    assert ' name: exp1\n' in text
    assert all(f'{key}: ' in text for key in vars(opt))


def test_every_train_flag_has_a_help_string(capsys):
    parser = TrainOptions().build_parser(accept_others=False)
    flags = []
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        flags += [s for s in action.option_strings if s.startswith('--')]
    assert len(flags) > 30
    with pytest.raises(SystemExit) as info:
        train.main(['--help'])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text, flag
    # The flag names users of the original code know.
    for flag in ('--dataset', '--folder', '--iteration', '--batch_size', '--print_freq', '--save_freq',
                 '--decay_flag', '--lr', '--weight_decay', '--adv_weight', '--cycle_weight', '--identity_weight',
                 '--cam_weight', '--recon_weight', '--ch', '--n_res', '--n_dis', '--img_size', '--img_ch',
                 '--light', '--result_dir', '--device', '--resume', '--dataroot', '--name', '--seed',
                 '--num_workers', '--display_server', '--display_port', '--display_env', '--display_id',
                 '--preset'):
        assert flag in flags, flag


def test_every_script_takes_the_one_shared_argument_list(capsys):
    """A training command line serves test.py, crf.py and pseudo.py as it is (and the reverse); another
    script's flags are accepted, kept out of the options and out of --help."""
    from options import script_options
    shared = ['--dataset', 'ISIC', '--display_id', '0', '--iteration', '7', '--reselect', '--splits', 'val',
              '--crf_params', 'alpha=2', '--boundary_band', '0.1', '--map_mode', 'cam', '--degrade_A', '0.5']
    for options in script_options():
        opt = options().parse(shared)
        own = {action.dest for action in options().build_parser(accept_others=False)._actions}
        assert not [key for key in vars(opt) if key.startswith('other_script_')]
        assert ('display_id' in vars(opt)) == ('display_id' in own)
        assert ('boundary_band' in vars(opt)) == ('boundary_band' in own)
        with pytest.raises(SystemExit) as info:
            options().parse(['--help'])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert ('--display_id' in text) == ('display_id' in own)
        assert ('--boundary_band' in text) == ('boundary_band' in own)
    with pytest.raises(SystemExit) as info:
        script_options()[1]().parse(['--no_such_flag', '1'])
    assert info.value.code == 2 and 'unrecognized arguments: --no_such_flag 1' in capsys.readouterr().err


def _help(options):
    """The --help text of ``options`` with its line wrapping undone."""
    return ' '.join(options().build_parser().format_help().split())


def _entries(options):
    """{flag: its --help entry} of ``options``' own flags."""
    parser = options().build_parser()
    text = parser.format_help()
    entries = re.split(r'\n {2}(?=--)', text[text.index('\n  --'):])
    entries = [entry.split('\n\n')[0] for entry in entries]  # not the next group's title
    return {entry.split()[0]: ' '.join(entry.split()) for entry in entries if entry.startswith('--')}


def test_help_says_what_fills_the_flags_the_preset_or_dataset_set():
    text = _help(TrainOptions)
    for entry in ('image side in pixels (divisible by 4) (default: cpu preset 128, paper preset 256)',
                  'base channel number of generators and discriminators (default: cpu preset 32, paper preset 54)',
                  'residual blocks in the encoder and in each decoder branch (default: 4 in both presets)',
                  '(the light U-GAT-IT) (default: True in both presets)',
                  'number of training iterations (steps) (default: cpu preset 3000, paper preset 7000; stage 2: 2000)',
                  'per process under torchrun (default: 1 in both presets; stage 2: 4)',
                  'Adam learning rate (default: 0.0001; stage 2: 0.001)',
                  'least-squares adversarial losses (default: 1 on every dataset)',
                  'cycle-consistency L1 (default: ISIC 5, BraTS and others 10)',
                  'CAM classification BCE of the generators (default: ISIC 1400, BraTS and others 1000)',
                  '--degrade_range DEGRADE_RANGE smallest,largest side', '(default: 72,144)'):
        assert entry in text, entry
    assert 'image side in pixels (divisible by 4) (default: cpu preset 128, paper preset 256)' in _help(TestOptions)


def test_every_script_lists_only_the_flags_it_uses_and_each_default_once():
    from options import script_options
    not_listed = {CRFOptions: ('--batch_size', '--model', '--preset', '--seed', '--img_size', '--ch', '--device',
                               '--num_threads', '--amp', '--iteration', '--map_mode'),
                  PseudoOptions: ('--map_mode', '--which_iter', '--select_few', '--reselect', '--splits',
                                  '--allow_other_dataset', '--ch', '--n_res', '--n_dis', '--light', '--iteration'),
                  TestOptions: ('--ch', '--n_res', '--n_dis', '--light', '--iteration', '--lr')}
    for options in script_options():
        entries = _entries(options)
        assert not set(not_listed.get(options, ())) & set(entries), options
        for flag, entry in entries.items():
            assert 'default: None' not in entry and 'unused' not in entry, entry
            assert len(re.findall(r'\(default|default:', entry, re.IGNORECASE)) <= 1, entry
    # Left out of --help, still taken from a shared command line and dropped.
    opt = CRFOptions().parse(['--batch_size', '3', '--device', 'cpu', '--map_mode', 'cam', '--num_workers', '1'])
    assert not {'batch_size', 'device', 'map_mode', 'model', 'img_size'} & set(vars(opt))
    opt = PseudoOptions().parse(['--device', 'cpu', '--which_iter', '4', '--reselect', '--batch_size', '3'])
    assert opt.batch_size == 3 and not {'which_iter', 'reselect', 'map_mode', 'ch'} & set(vars(opt))
    assert TestOptions().parse(['--device', 'cpu']).batch_size == 8


def test_model_lists_every_model_file():
    files = os.listdir(os.path.join(REPO_ROOT, 'models'))
    names = sorted(f[:-len('_model.py')] for f in files if f.endswith('_model.py') and f != 'base_model.py')
    assert model_names() == names and {'seg', 'cascade', 'otsu', 'cam', 'cltnet'} <= set(names)
    for options in (TrainOptions, TestOptions, PseudoOptions):
        entry = _entries(options)['--model']
        assert f"model, one of models/NAME_model.py: {', '.join(names)} (default: cltnet" in entry


def test_the_command_line_names_each_flag_once_with_the_value_taken():
    opt = parse('--name', 'cltnet', '--iteration', '5', '--name', 'uxrun')
    assert opt.name == 'uxrun'
    assert opt.command_line.split(' ', 1)[1] == '--device cpu --iteration 5 --name uxrun'
    assert f'command_line: {opt.command_line}\n' in format_options(opt)


def test_a_dataset_of_another_name_is_told_which_loss_weights_it_gets(capsys):
    parse('--dataset', 'mine', '--cam_weight', '5')
    assert capsys.readouterr().out == ("note: --dataset mine has no loss weights of its own; using BraTS's for "
                                       "--adv_weight 1, --cycle_weight 10, --identity_weight 10, --recon_weight 10 "
                                       "(set them, e.g. in a recipe)\n")
    for dataset in ('ISIC', 'BraTS', 'demo'):
        parse('--dataset', dataset)
    parse('--dataset', 'mine', '--adv_weight', '1', '--cycle_weight', '1', '--identity_weight', '1',
          '--cam_weight', '1', '--recon_weight', '1')
    assert capsys.readouterr().out == ''


NOT_ONE_FOLDER = ['../../../ISIC/copy', '..', '.', '', 'a/b', 'a\\b', '/abs/path']


@pytest.mark.parametrize('flag', ['--dataset', '--folder'])
@pytest.mark.parametrize('value', NOT_ONE_FOLDER)
@pytest.mark.parametrize('options', [TrainOptions, TestOptions, CRFOptions, PseudoOptions])
def test_a_dataset_or_folder_that_is_not_one_folder_name_is_refused(capsys, options, flag, value):
    """The fault probe's ``--folder ../../../<dataset>/copy`` put a run inside the dataset, outside --result_dir."""
    with pytest.raises(SystemExit) as info:
        options().parse([flag, value])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].split(': error: ')[1] == (
        f"{flag} must be one folder name, without / or \\ and not '', '.' or '..' (the data folder is "
        f"<dataroot>/<dataset>/<folder>, the runs go to <result_dir>/<dataset>/<folder>), got {value!r}")


@pytest.mark.parametrize('flag, value', [(flag, value) for flag in ('--dataset', '--folder', '--name')
                                         for value in NOT_ONE_FOLDER if (flag, value) != ('--folder', '')])
def test_pipeline_refuses_the_same_names_with_the_same_line(capsys, flag, value):
    """pipeline.py takes an empty --folder as not given (the dataset's default folder)."""
    argv = ['--dataset', 'mine', '--recipe', 'recipes/demo.toml', flag, value]
    with pytest.raises(SystemExit) as info:
        pipeline.parse_args(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].split(': error: ')[1].startswith(
        f"{flag} must be one folder name, without / or \\ and not '', '.' or '..' (the ")


def test_a_folder_name_with_dots_inside_is_one_folder_name():
    opt = parse('--dataset', 'my.lesions', '--folder', 'v1..2', '--name', '.run')
    assert (opt.dataset, opt.folder, opt.name) == ('my.lesions', 'v1..2', '.run')


class ToyModel(BaseModel):
    """A model of a test's own: everything the command line has of it comes from this class."""

    map_modes = ('toy-map',)
    dataset_defaults = {'BraTS': dict(toy_weight=7.0), 'ISIC': dict(toy_weight=3.0)}
    fallback_dataset = 'BraTS'
    dataset_defaults_name = 'toy weights'
    flag_ranges = {'toy_weight': (0, None)}

    @staticmethod
    def modify_commandline_options(parser, groups):
        groups['network'].add_argument('--toy_depth', type=int, default=2, help='toy network depth')
        parser.add_argument_group('toy losses').add_argument('--toy_weight', type=float, default=None,
                                                             help='toy loss weight')


@pytest.fixture
def toy_model(monkeypatch):
    """ToyModel as if models/toy_model.py held it (the flag table of every script built afresh)."""
    classes = {**model_classes(), 'toy': ToyModel}
    monkeypatch.setattr(model_flags, 'model_classes', lambda: classes)
    monkeypatch.setattr(train_options, 'model_classes', lambda: classes)
    script_flags.cache_clear()
    yield
    script_flags.cache_clear()


def test_a_models_flags_defaults_and_map_modes_come_from_its_file(toy_model, capsys):
    with pytest.raises(SystemExit):
        train.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert '--toy_depth TOY_DEPTH toy network depth (default: 2)' in text
    assert 'toy losses: --toy_weight TOY_WEIGHT toy loss weight (default: ISIC 3.0, BraTS and others 7.0)' in text
    # Each model in name order (the baselines of issue 41 sit between otsu and seg); argparse may wrap a line
    # after a hyphen.
    help_text = _help(TestOptions).replace('- ', '-')
    assert re.search(r"otsu: dark, bright; (\w+: [^;]+; )*seg: seg, seg-flips \(the U-Net averaged over the image's "
                     r"four flips\); toy: toy-map\)", help_text)
    assert (parse('--dataset', 'ISIC').toy_weight, parse('--dataset', 'BraTS').toy_weight) == (3.0, 7.0)
    assert (parse('--dataset', 'ISIC', '--toy_weight', '0').toy_weight, parse('--toy_depth', '5').toy_depth) == (0, 5)
    assert parse('--stage', '2').toy_weight is None  # stage 2 takes the stage-2 model's defaults alone
    capsys.readouterr()
    assert parse('--dataset', 'mine', '--cam_weight', '5', '--adv_weight', '1', '--cycle_weight', '1',
                 '--identity_weight', '1', '--recon_weight', '1').toy_weight == 7.0
    assert capsys.readouterr().out == ("note: --dataset mine has no toy weights of its own; using BraTS's for "
                                       "--toy_weight 7 (set them, e.g. in a recipe)\n")
    with pytest.raises(SystemExit):
        parse('--toy_weight', '-1')
    assert '--toy_weight must be at least 0, got -1.0' in capsys.readouterr().err
    # The one shared argument list: test.py takes the toy flags and drops them.
    assert not {'toy_depth', 'toy_weight'} & set(vars(TestOptions().parse(['--device', 'cpu', '--toy_weight', '2'])))


def test_the_released_defaults_come_from_the_model_files():
    from models.cltnet_model import CLTNetModel
    from models.seg_model import SegModel
    for dataset in ('ISIC', 'BraTS', 'demo'):
        assert _subset(parse('--dataset', dataset), CLTNetModel.dataset_defaults[dataset]) == \
            WEIGHTS.get(dataset, WEIGHTS['BraTS'])
    stage2 = parse('--stage', '2')
    assert _subset(stage2, SegModel.train_defaults) == dict(name='stage2', lr=1e-3, iteration=2000, batch_size=4)
    assert stage2.model == 'seg' and stage2.adv_weight is None
