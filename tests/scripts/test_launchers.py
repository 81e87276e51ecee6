"""start_train.sh, start_test.sh and start_crf.sh take the paths the user gives from where the user stands, as
start_predict.sh does: run from another folder with a stand-in python that records its folder and words."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# A stand-in for the venv's python: `-c CODE` (start_test.sh asks for the default folder) runs for real, a
# script call is recorded instead of run.
RECORDER = ('import json, os, sys; '
            'json.dump({"cwd": os.getcwd(), "argv": sys.argv[1:]}, open(os.environ["RECORD"], "w"))')
STAND_IN = f"""#!/bin/sh
if [ "$1" = -c ]; then exec "$REAL_PYTHON" "$@"; fi
exec "$REAL_PYTHON" -c '{RECORDER}' "$@"
"""


@pytest.fixture
def launch(tmp_path):
    """launch(script, *args, cwd=..., **env) -> (the folder the script ran python in, its words)."""
    stand_in = tmp_path / 'bin' / 'python'
    stand_in.parent.mkdir()
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    record = tmp_path / 'record.json'

    def run(script, *args, cwd, **env):
        env = dict(os.environ, PYTHON=str(stand_in), REAL_PYTHON=sys.executable, RECORD=str(record), **env)
        subprocess.run(['bash', os.path.join(REPO_ROOT, script), *args], cwd=cwd, env=env, check=True, timeout=120,
                       capture_output=True)
        started = json.loads(record.read_text())
        return started['cwd'], started['argv']
    return run


def flag(words, name):
    """The value of the last ``name`` in ``words`` (the one argparse keeps)."""
    return words[len(words) - 1 - words[::-1].index(name) + 1]


def test_train_all_from_another_folder_reads_dataroot_recipe_and_path_flags_from_there(launch, tmp_path):
    here = tmp_path / 'work'
    here.mkdir()
    cwd, words = launch('start_train.sh', 'MyLesions', 'all', '--result_dir', 'runs', '--out=mine.pt', '--seed', '3',
                        cwd=here, DATAROOT='mydata', RECIPE='recipes/mine.toml')
    assert cwd == REPO_ROOT and words[0] == 'pipeline.py'
    assert flag(words, '--dataroot') == f'{here}/mydata'
    assert flag(words, '--recipe') == f'{here}/recipes/mine.toml'
    assert flag(words, '--result_dir') == f'{here}/runs'
    assert f'--out={here}/mine.pt' in words and flag(words, '--seed') == '3'


@pytest.mark.parametrize('script', ['start_train.sh', 'start_test.sh', 'start_crf.sh'])
def test_each_launcher_takes_dataroot_from_the_callers_folder(launch, tmp_path, script):
    cwd, words = launch(script, 'ISIC', '--weights', 'w.pt', cwd=tmp_path, DATAROOT='../data')
    assert cwd == REPO_ROOT and words[0] in ('train.py', 'test.py', 'crf.py')
    assert os.path.normpath(flag(words, '--dataroot')) == os.path.normpath(tmp_path / '..' / 'data')
    assert flag(words, '--weights') == f'{tmp_path}/w.pt'


@pytest.mark.slow
def test_from_the_repository_paths_pass_unchanged_and_defaults_stay_the_repositorys(launch, tmp_path):
    _, words = launch('start_train.sh', 'ISIC', 'all', '--result_dir', 'runs', cwd=REPO_ROOT, DATAROOT='../data')
    assert [flag(words, name) for name in ('--dataroot', '--recipe', '--result_dir')] == \
        ['../data', 'recipes/ISIC.toml', 'runs']
    _, words = launch('start_test.sh', 'ISIC', cwd=tmp_path)  # no run of that name: the released file
    assert flag(words, '--dataroot') == '../shared/datasets' and flag(words, '--weights') == 'weights/ISIC.pt'
    _, words = launch('start_train.sh', cwd=tmp_path, DATAROOT='elsewhere')  # the demo's data is the repository's
    assert flag(words, '--dataroot') == './dataset'


def test_absolute_paths_are_kept(launch, tmp_path):
    _, words = launch('start_crf.sh', 'BraTS', '--result_dir', '/abs/runs', cwd=tmp_path, DATAROOT='/abs/data')
    assert (flag(words, '--dataroot'), flag(words, '--result_dir')) == ('/abs/data', '/abs/runs')
