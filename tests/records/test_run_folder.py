"""records/run_folder.py names every path of a run folder, and no other module spells them."""
import ast
import os

from conftest import REPO_ROOT
from records import run_folder as rf

# The files and folders of a run folder whose names only records/run_folder.py may write ('samples', 'test',
# 'crf', 'pseudo' are left out: other things share those words).
RUN_NAMES = ('opt.txt', 'checkpoints', 'loss_log.csv', 'summary.json', 'metrics.csv', 'selection.json',
             'val_grid.json', 'index.html', 'benchmark_train.json', 'pipeline.json', 'steps.json', 'release.pt',
             'stage1.pt', 'cascade.pt')


def test_the_layout_it_names():
    run = rf.run_folder('results', 'ISIC', 'isic_1', 'r1')
    assert run == os.path.join('results', 'ISIC', 'isic_1', 'r1')
    assert rf.run_in(rf.runs_folder('results', 'ISIC', 'isic_1'), 'r1') == run
    assert rf.options_file(run) == os.path.join(run, 'opt.txt')
    assert rf.checkpoint_path(run, 42) == os.path.join(run, 'checkpoints', 'iter_0000042.pt')
    assert rf.sample_path(run, 7) == os.path.join(run, 'samples', 'step_0000007.png')
    val = rf.split_folder(run, 'test', 'val')
    assert val == os.path.join(run, 'test', 'val')
    assert rf.image_path(val, 'masks', 'a') == os.path.join(val, 'masks', 'a.png')
    assert (rf.metrics_path(val), rf.summary_path(val)) == (os.path.join(val, 'metrics.csv'),
                                                            os.path.join(val, 'summary.json'))
    assert rf.test_record_path(run) == os.path.join(run, 'test', 'selection.json')
    assert rf.crf_record_path(run) == os.path.join(run, 'crf', 'selection.json')
    assert rf.val_grid_path(run) == os.path.join(run, 'crf', 'val_grid.json')
    pseudo = rf.pseudo_folder(run)
    assert rf.pseudo_mask_paths(pseudo, 'A', '/data/A/x.jpg') == (os.path.join(pseudo, 'A', 'masks', 'x.png'),
                                                                   os.path.join(pseudo, 'A', 'confidence', 'x.png'))
    assert rf.pseudo_mask_paths(pseudo, 'B', 'y.png') == (os.path.join(pseudo, 'B', 'masks', 'y.png'), None)
    assert rf.pseudo_prob_path(pseudo, 'x') == os.path.join(run, 'pseudo', 'A', 'prob', 'x.png')
    assert rf.report_path(run) == os.path.join(run, 'index.html')
    assert rf.pipeline_run_name('isic', 'release') == 'isic_release'
    assert rf.pipeline_record_path(run) == os.path.join(run, 'pipeline.json')
    assert rf.pipeline_snapshot_path(run) == os.path.join(run, 'steps.json')
    assert rf.pipeline_file(run, 'release') == os.path.join(run, 'release.pt')


def test_list_checkpoints_oldest_first(tmp_path):
    for step in (20, 3):
        path = rf.checkpoint_path(str(tmp_path), step)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, 'wb').close()
    open(os.path.join(tmp_path, 'checkpoints', 'iter_x.pt'), 'wb').close()
    assert [step for step, _ in rf.list_checkpoints(str(tmp_path))] == [3, 20]


def _source_files():
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('tests', '__pycache__', 'shared')]
        yield from (os.path.join(folder, name) for name in files if name.endswith('.py'))


def run_names_spelled(path):
    """[(line, text)] of the string pieces in ``path`` that name a run-folder file or folder as a path does:
    the name alone, or a path ending in it (text with spaces is prose: a help line or a docstring)."""
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not any(c.isspace() for c in node.value):
            if any(node.value == name or node.value.endswith('/' + name) for name in RUN_NAMES):
                found.append((node.lineno, node.value))
    return found


def test_no_module_but_run_folder_spells_a_run_path():
    """One place builds run paths: a module that joins 'summary.json' (or another run-folder name) itself fails
    here; ask records/run_folder.py instead (tests may spell the layout they check)."""
    owner = os.path.join(REPO_ROOT, 'records', 'run_folder.py')
    offenders = [f'{os.path.relpath(path, REPO_ROOT)}:{line}: {text!r}' for path in _source_files() if path != owner
                 for line, text in run_names_spelled(path)]
    assert not offenders, 'run-folder paths built outside records/run_folder.py:\n' + '\n'.join(offenders)


def test_the_scan_finds_a_hand_built_path(tmp_path):
    module = tmp_path / 'm.py'
    module.write_text("import os\npath = os.path.join(run, 'test', split, 'summary.json')\n"
                      "log = f'{run}/loss_log.csv'\nhelp = 'default <run>/release.pt'\n")
    assert run_names_spelled(str(module)) == [(2, 'summary.json'), (3, '/loss_log.csv')]
