"""Tests for pseudo.py and the stage-2 pipeline: stage 1 -> test -> crf -> pseudo-masks -> stage 2 -> test -> crf."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import crf
import pseudo
import train
from conftest import TINY_FOLDER, file_hashes, test_script, usage_error
from data.image_io import list_images, read_mask
from data.pseudo_dataset import read_confidence
from options.train_options import TrainOptions
from tools import export_weights

CRF_FIXED = ['--crf_params', 'alpha=2,n_iter=3']


def test_boundary_confidence_is_zero_on_the_edge_and_one_far_away():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    confidence = pseudo.boundary_confidence(mask, band=4)
    assert confidence[10, 20] <= 0.25 and confidence[9, 20] <= 0.25
    assert confidence[20, 20] == 1 and confidence[0, 0] == 1
    assert 0 < confidence[12, 20] < 1
    assert not pseudo.boundary_confidence(np.zeros((8, 8), bool), band=4).any()


@pytest.fixture
def stage_one(tiny_argv, tiny_test_argv, run_folder):
    """A tiny stage-1 run with test.py and crf.py outputs; returns its folder."""
    assert train.main(tiny_argv('--save_freq', '2', name='s1')) == 0
    test_script.main(tiny_test_argv('--splits', 'testA', name='s1'))
    crf.main(tiny_test_argv('--splits', 'testA', *CRF_FIXED, name='s1'))
    return run_folder('s1')


def _pseudo_argv(tiny_test_argv, *extra):
    return tiny_test_argv('--crf_workers', '1', *extra, name='s1')


@pytest.mark.slow
def test_pseudo_masks_then_stage_two_then_test_and_crf(stage_one, tiny_dataroot, tiny_argv, tiny_test_argv,
                                                       run_folder):
    pseudo.main(_pseudo_argv(tiny_test_argv))
    out = os.path.join(stage_one, 'pseudo')
    summary = json.load(open(os.path.join(out, 'summary.json')))
    assert summary['crf']['alpha'] == 2 and summary['crf']['n_iter'] == 3  # crf.py's choice for the run
    assert (summary['n_A'], summary['n_B']) == (6, 6)
    folder = os.path.join(tiny_dataroot, 'tiny', TINY_FOLDER)
    for path in list_images(os.path.join(folder, '6_A_weak')):
        name = os.path.basename(path)
        mask = read_mask(os.path.join(out, 'A', 'masks', name))
        confidence = read_confidence(os.path.join(out, 'A', 'confidence', name))
        assert mask.shape == confidence.shape == (32, 32)
        assert confidence.max() <= 1 and (not mask.any() or (confidence == 1).any())
    for path in list_images(os.path.join(folder, '6_B_weak')):
        assert not read_mask(os.path.join(out, 'B', 'masks', os.path.basename(path))).any()
    # The few-shot images are training images with labels: the pseudo-masks are scored on them.
    assert summary['few_sample_check']['n_images'] == 6 and 0 <= summary['few_sample_check']['DI'] <= 1

    stage2 = ['--stage', '2', '--pseudo', 's1', '--few_sample', 'stage2_8', '--few_weight', '2', '--save_freq', '2']
    assert train.main(tiny_argv(*stage2, name='s2')) == 0
    assert sorted(os.listdir(os.path.join(run_folder('s2'), 'checkpoints'))) == ['iter_0000002.pt', 'iter_0000004.pt']
    test_script.main(tiny_test_argv('--splits', 'testA,testB', name='s2'))  # model read from the checkpoint
    crf.main(tiny_test_argv('--splits', 'testA', *CRF_FIXED, name='s2'))
    with pytest.raises(SystemExit, match='this model trained on those labels'):
        test_script.main(tiny_test_argv('--select_few', 'stage2_8', name='s2'))
    for stage in ('test', 'crf'):
        scores = json.load(open(os.path.join(run_folder('s2'), stage, 'testA', 'summary.json')))
        assert all(0 <= scores[k] <= 1 for k in ('JA', 'DI', 'AC', 'SE', 'SP'))

    # Released stage-2 weights hold the U-Net alone and reproduce the run's testA scores.
    weights = os.path.join(run_folder('s2'), 'released.pt')
    export_weights.main(['--run', run_folder('s2'), '--out', weights])
    assert list(torch.load(weights, weights_only=False)['nets']) == ['seg']
    test_script.main(tiny_test_argv('--splits', 'testA', '--weights', weights, name='s2w'))
    released = json.load(open(os.path.join(run_folder('s2w'), 'test', 'testA', 'summary.json')))
    trained = json.load(open(os.path.join(run_folder('s2'), 'test', 'testA', 'summary.json')))
    assert abs(released['DI'] - trained['DI']) < 0.02


@pytest.mark.slow
def test_pseudo_masks_are_deterministic(stage_one, tiny_test_argv):
    """Every file byte for byte: masks, confidence and probability PNGs, and summary.json."""
    out = os.path.join(stage_one, 'pseudo')
    pseudo.main(_pseudo_argv(tiny_test_argv))
    first = file_hashes(out)
    masks = [read_mask(os.path.join(out, 'A', 'masks', name)) for name in os.listdir(os.path.join(out, 'A', 'masks'))]
    assert any(mask.any() for mask in masks)  # not trivially equal: some pseudo-masks hold a lesion
    pseudo.main(_pseudo_argv(tiny_test_argv))
    assert file_hashes(out) == first
    assert {os.path.dirname(path) for path in first} == {'', 'A/prob', 'A/masks', 'A/confidence', 'B/masks'}


@pytest.mark.slow
def test_stage_two_without_pseudo_masks_names_the_fix(stage_one, tiny_argv):
    with pytest.raises(SystemExit, match='run pseudo.py for the stage-1 run first'):
        train.main(tiny_argv('--stage', '2', '--pseudo', 's1', name='s2'))


@pytest.mark.slow
def test_few_shot_folder_problems_are_one_line(stage_one, tiny_test_argv, tiny_argv, tiny_dataroot):
    pseudo.main(_pseudo_argv(tiny_test_argv))
    with pytest.raises(SystemExit, match='few-shot folder .* not found'):
        train.main(tiny_argv('--stage', '2', '--pseudo', 's1', '--few_sample', 'nope', name='s2'))
    labels = os.path.join(tiny_dataroot, 'tiny', TINY_FOLDER, 'few_sample', 'stage2_8', 'B')
    removed = sorted(os.listdir(labels))[0]
    os.rename(os.path.join(labels, removed), os.path.join(labels, '..', removed))
    try:
        with pytest.raises(SystemExit, match='1 image\\(s\\) without a mask'):
            train.main(tiny_argv('--stage', '2', '--pseudo', 's1', '--few_sample', 'stage2_8', name='s2'))
    finally:
        os.rename(os.path.join(labels, '..', removed), os.path.join(labels, removed))


@pytest.mark.slow
def test_a_few_shot_label_replaces_the_pseudo_mask_of_its_image(stage_one, tiny_test_argv, tiny_argv, tiny_dataroot):
    pseudo.main(_pseudo_argv(tiny_test_argv))
    opt = TrainOptions().parse(tiny_argv('--stage', '2', '--pseudo', 's1', '--few_sample', 'stage2_8', name='s2'))
    files = train.check_data(opt)
    lesion, _ = train.training_datasets(opt, files)
    labelled = set(os.listdir(os.path.join(tiny_dataroot, 'tiny', TINY_FOLDER, 'few_sample', 'stage2_8', 'A')))
    assert labelled and len(lesion) == len(files.paths_A)  # each lesion image once
    for item in lesion.items:
        from_few_shot = os.sep + 'few_sample' + os.sep in item.mask
        assert from_few_shot == (os.path.basename(item.image) in labelled)


@pytest.mark.slow
def test_pseudo_without_crf_choice_asks_for_it(tiny_argv, tiny_test_argv):
    assert train.main(tiny_argv(name='s1')) == 0
    test_script.main(tiny_test_argv('--splits', 'testA', name='s1'))
    with pytest.raises(SystemExit, match='run crf.py for this run first'):
        pseudo.main(_pseudo_argv(tiny_test_argv))



@pytest.mark.slow
def test_two_stage_file_serves_both_stages_maps(stage_one, tiny_argv, tiny_test_argv, run_folder, tmp_path):
    """export_weights --generator joins a stage-2 run with a stage-1 file: test.py --weights then
    chooses among the maps of both, and each stage's maps equal those of its own file."""
    pseudo.main(_pseudo_argv(tiny_test_argv))
    assert train.main(tiny_argv('--stage', '2', '--pseudo', 's1', name='s2')) == 0
    test_script.main(tiny_test_argv('--splits', 'testA', name='s2'))
    stage1, stage2, both = (str(tmp_path / f'{name}.pt') for name in ('stage1', 'stage2', 'both'))
    export_weights.main(['--run', stage_one, '--out', stage1])
    export_weights.main(['--run', run_folder('s2'), '--out', stage2])
    export_weights.main(['--run', run_folder('s2'), '--out', both, '--generator', stage1])
    state = torch.load(both, weights_only=False)
    assert state['architecture']['model'] == 'cascade' and sorted(state['nets']) == ['G_AB', 'seg']
    assert state['stage1']['selection']['map_mode'] == torch.load(stage1, weights_only=False)['selection']['map_mode']

    def testA_DI(weights, name, *extra):
        test_script.main(tiny_test_argv('--splits', 'testA', '--weights', weights, *extra, name=name))
        return json.load(open(os.path.join(run_folder(name), 'test', 'testA', 'summary.json')))['DI']

    testA_DI(both, 'both', '--rechoose', 'True')  # as pipeline.py's release_test: the file's own choice is stage 2's
    ranked = json.load(open(os.path.join(run_folder('both'), 'test', 'selection.json')))['selection']['ranking']
    # Re-exported from its val-choosing test run, the file keeps both networks and the stage-1 record.
    final = str(tmp_path / 'final.pt')
    export_weights.main(['--run', run_folder('both'), '--out', final])
    again = torch.load(final, weights_only=False)
    assert sorted(again['nets']) == ['G_AB', 'seg'] and again['stage1'] == state['stage1']
    # The file keeps the pseudo.py command, so a re-export still names it once the pseudo-masks are gone.
    assert again['pseudo_command'] == state['pseudo_command'] and '--crf_workers 1' in state['pseudo_command']
    shutil.rmtree(os.path.join(stage_one, 'pseudo'))
    readme = str(tmp_path / 'README.md')
    export_weights.main(['--run', run_folder('both'), '--out', final, '--readme', readme, '--dataset', 'tiny'])
    assert f"Pseudo-masks: `python {state['pseudo_command']}`" in open(readme).read()
    assert again['train_seconds'] == torch.load(run_folder('s2') + '/checkpoints/iter_0000004.pt',
                                                weights_only=False)['train_seconds']
    assert {'attention', 'difference', 'fused', 'cam', 'seg'} <= {row['map_mode'] for row in ranked}
    assert testA_DI(both, 'both_seg', '--map_mode', 'seg') == testA_DI(stage2, 'only_seg', '--map_mode', 'seg')
    assert testA_DI(both, 'both_cam', '--map_mode', 'cam') == testA_DI(stage1, 'only_cam', '--map_mode', 'cam')
    with pytest.raises(SystemExit, match="--map_mode seg: this model's maps are attention, "):
        testA_DI(stage1, 'no_seg', '--map_mode', 'seg')


@pytest.mark.slow
def test_generator_needs_a_stage_two_run(stage_one, tmp_path):
    with pytest.raises(SystemExit, match='--generator needs a stage-2 run'):
        export_weights.main(['--run', stage_one, '--out', str(tmp_path / 'x.pt'), '--generator', 'weights/ISIC.pt'])


@pytest.mark.slow
def test_test_select_few_adds_labelled_images_the_model_never_learned_to_val(stage_one, tiny_dataroot,
                                                                            tiny_test_argv, run_folder):
    few = os.listdir(os.path.join(tiny_dataroot, 'tiny', TINY_FOLDER, 'few_sample', 'stage2_8', 'A'))
    test_script.main(tiny_test_argv('--splits', 'testA', '--select_few', 'stage2_8', name='s1'))
    val = json.load(open(os.path.join(run_folder('s1'), 'test', 'val', 'summary.json')))
    assert val['n_images'] == 3 + len(few) and val['selection']['chosen_on'] == 'val + few_sample/stage2_8'
    crf.main(tiny_test_argv('--splits', 'testA', name='s1'))
    refined = json.load(open(os.path.join(run_folder('s1'), 'crf', 'testA', 'summary.json')))
    assert refined['selection']['chosen_on'] == 'val + few_sample/stage2_8'
    with pytest.raises(SystemExit, match='few_sample/nope not found'):
        test_script.main(tiny_test_argv('--select_few', 'nope', name='s1'))


@pytest.mark.slow
def test_select_few_holds_its_images_out_of_training_and_is_chosen_on(stage_one, tiny_dataroot, tiny_argv,
                                                                      tiny_test_argv, run_folder, tmp_path,
                                                                      monkeypatch, capsys):
    pseudo.main(_pseudo_argv(tiny_test_argv))
    root = str(tmp_path / 'root')
    shutil.copytree(tiny_dataroot, root)
    few = os.path.join(root, 'tiny', TINY_FOLDER, 'few_sample')
    shutil.copytree(os.path.join(few, 'stage2_8'), os.path.join(few, 'held2'))
    held = sorted(os.listdir(os.path.join(few, 'held2', 'A')))[:2]
    for name in sorted(os.listdir(os.path.join(few, 'held2', 'A')))[2:]:
        os.remove(os.path.join(few, 'held2', 'A', name))
        os.remove(os.path.join(few, 'held2', 'B', name[:-4] + '_segmentation.png'))
    stage2 = ['--stage', '2', '--pseudo', 's1', '--save_freq', '2', '--dataroot', root]
    assert '--select_few holds labelled images out of stage-2 training; it needs --stage 2' in \
        usage_error(capsys, train.main, tiny_argv('--select_few', 'held2', '--dataroot', root, name='s1h'))
    both = tiny_argv(*stage2, '--select_few', 'held2', '--few_sample', 'held2', name='s2h')
    assert 'cannot be both trained on (--few_sample) and held out' in usage_error(capsys, train.main, both)
    with pytest.raises(SystemExit, match='holds out all 6 lesion training images'):
        train.main(tiny_argv(*stage2, '--select_few', 'stage2_8', name='s2h'))

    trained_on = []
    real_items = train.pseudo_items

    def recording_items(pseudo_dir, paths, domain):
        if domain == 'A':
            trained_on.extend(os.path.basename(path) for path in paths)
        return real_items(pseudo_dir, paths, domain)
    monkeypatch.setattr(train, 'pseudo_items', recording_items)
    assert train.main(tiny_argv(*stage2, '--select_few', 'held2', name='s2h')) == 0
    assert len(trained_on) == 4 and not set(held) & set(trained_on)

    test_script.main(tiny_test_argv('--splits', 'testA', '--dataroot', root, name='s2h'))
    crf.main(tiny_test_argv('--splits', 'testA', '--dataroot', root, name='s2h'))
    val = json.load(open(os.path.join(run_folder('s2h'), 'test', 'val', 'summary.json')))
    assert val['n_images'] == 3 + 2 and val['selection']['select_few'] == 'held2'
    assert val['selection']['chosen_on'] == 'val + few_sample/held2'
    assert sorted(os.listdir(os.path.join(run_folder('s2h'), 'test', 'val', 'masks')))[:2] == held
    refined = json.load(open(os.path.join(run_folder('s2h'), 'crf', 'testA', 'summary.json')))
    assert refined['selection']['chosen_on'] == 'val + few_sample/held2'
    readme = str(tmp_path / 'README.md')
    export_weights.main(['--run', run_folder('s2h'), '--out', str(tmp_path / 'held.pt'), '--readme', readme,
                         '--dataset', 'tiny'])
    assert 'Chosen on val + few_sample/held2: checkpoint step' in open(readme).read()
    assert '| val + few_sample/held2 | before CRF |' in open(readme).read()

    # A dataset without that folder: val alone, said so.
    test_script.main(tiny_test_argv('--splits', 'testA', '--reselect', name='s2h'))
    assert 'few_sample/held2 (held out of training to choose on) not found' in capsys.readouterr().out
    val = json.load(open(os.path.join(run_folder('s2h'), 'test', 'val', 'summary.json')))
    assert val['n_images'] == 3 and 'select_few' not in val['selection'] and val['selection']['chosen_on'] == 'val'
