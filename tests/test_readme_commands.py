"""README.md's own-data commands, as written and in their order: tools.prepare_weak, then pipeline.py (and
the start_train.sh line offered instead), on tiny generated folders, so the README and the code cannot
drift apart (issue 42: the README's pipeline.py command looked for a folder prepare_weak.py had not made)."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, tiny_recipe

SECTION = '## Your own weakly labelled data'


def readme_commands():
    """The shell commands of the README's own-data section: each fenced ``bash`` block's lines, joined at
    a trailing backslash, comments dropped, plus the ``# or:`` alternatives; as word lists."""
    with open(os.path.join(REPO_ROOT, 'README.md'), encoding='utf-8') as handle:
        text = handle.read()
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', section, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            alternative = re.match(r'\s*# or: (.*)', line)
            words = shlex.split(alternative.group(1) if alternative else line, comments=True)
            if words:
                commands.append(words)
    return commands


def command(commands, script):
    """The one README command that runs ``script`` (e.g. 'tools.prepare_weak')."""
    found = [words for words in commands if script in words]
    assert len(found) == 1, f'README.md, {SECTION}: expected one command running {script}, found {found}'
    return found[0]


def flag(words, name):
    """The value of ``name`` in a command's ``words``."""
    assert name in words, f'{name} not in: {shlex.join(words)}'
    return words[words.index(name) + 1]


def script_argv(words):
    """A README ``python SCRIPT ...`` or ``python -m TOOL ...`` command as this interpreter running the
    repository's script or tool (a tool run elsewhere than the repository needs it on PYTHONPATH)."""
    assert words[0] == 'python', words
    if words[1] == '-m':
        return [sys.executable, *words[1:]]
    return [sys.executable, os.path.join(REPO_ROOT, words[1]), *words[2:]]


def until_training(argv, cwd, marker):
    """Run ``argv`` in ``cwd`` in a process group of its own until its output shows ``marker`` (the first
    training step), then stop the group with Ctrl-C as a user would; returns the output. A whole pipeline
    takes minutes even on tiny data (a CRF search per stage), more than the suite can spend."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    output = b''
    try:
        while marker.encode() not in output:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            output += chunk
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        output += process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return output.decode(errors='replace')


def user_folders(root, prepare):
    """The four input folders the prepare_weak.py command names, under ``root``, with just enough tiny images
    for its --n_val and --n_testB: blobs on the lesion and labelled images, plain texture on the normal ones."""
    rng = np.random.RandomState(0)
    n_val, n_test_b = int(flag(prepare, '--n_val')), int(flag(prepare, '--n_testB'))
    counts = {'--lesion': 6, '--normal': n_test_b + 6, '--labelled_images': n_val + 2}
    for name, count in counts.items():
        folder = root / flag(prepare, name)
        folder.mkdir(parents=True)
        for i in range(count):
            image = rng.randint(150, 210, (24, 24, 3)).astype(np.uint8)
            mask = np.zeros((24, 24), np.uint8)
            if name != '--normal':
                y, x = rng.randint(4, 12, 2)
                mask[y:y + 8, x:x + 8] = 255
                image[mask > 0] = 60
            Image.fromarray(image).save(folder / f'{i:03d}.png')
            if name == '--labelled_images':
                masks = root / flag(prepare, '--labelled_masks')
                masks.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(masks / f'{i:03d}_segmentation.png')


@pytest.fixture(scope='module')
def commands():
    return readme_commands()


@pytest.mark.slow
def test_the_readme_own_data_commands_run_in_sequence_as_written(commands, tmp_path):
    """pipeline.py finds the folder prepare_weak.py wrote and its stage 1 trains on it (with a tiny copy of the
    demo recipe where the README copies recipes/ISIC.toml for the user to edit); stopped at its first step."""
    prepare, run = command(commands, 'tools.prepare_weak'), command(commands, 'pipeline.py')
    user_folders(tmp_path, prepare)
    done = subprocess.run(script_argv(prepare), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    data = os.path.join(flag(prepare, '--out'), flag(prepare, '--dataset'), flag(prepare, '--folder'))
    assert done.stdout.strip().endswith(f'-> {data}')
    recipe = tmp_path / flag(run, '--recipe')
    recipe.parent.mkdir(parents=True)
    tiny_recipe(recipe)
    dataset = flag(run, '--dataset')
    output = until_training(script_argv(run), tmp_path, f'train {dataset}:')
    stage1 = re.search(r'\[stage1\] running: (.*)', output)
    assert stage1 and 'not found' not in output, output[-3000:]
    words = shlex.split(stage1.group(1))
    assert [flag(words, name) for name in ('--dataroot', '--dataset', '--folder')] == \
        [flag(prepare, '--out'), flag(prepare, '--dataset'), flag(prepare, '--folder')]
    assert f'train {dataset}:' in output, output[-3000:]  # train.py read the folder's images


@pytest.mark.slow
def test_the_start_train_line_runs_the_same_pipeline_command(commands, tmp_path):
    """start_train.sh MyLesions all, as the README offers it, hands pipeline.py the same data folder, recipe
    and name (a stand-in python records the words start_train.sh passes)."""
    run, launcher = command(commands, 'pipeline.py'), command(commands, 'start_train.sh')
    env = dict(os.environ)
    while '=' in launcher[0]:
        key, value = launcher.pop(0).split('=', 1)
        env[key] = value
    record = tmp_path / 'argv.json'
    stand_in = tmp_path / 'python'
    stand_in.write_text('#!/bin/sh\nexec "$REAL_PYTHON" -c \'import json, os, sys; json.dump({"cwd": os.getcwd(), '
                        '"argv": sys.argv[1:]}, open(os.environ["RECORD"], "w"))\' "$@"\n')
    stand_in.chmod(0o755)
    env.update(PYTHON=str(stand_in), REAL_PYTHON=sys.executable, RECORD=str(record))
    assert launcher[0] == 'bash'
    subprocess.run(['bash', os.path.join(REPO_ROOT, launcher[1]), *launcher[2:]], cwd=REPO_ROOT, env=env,
                   check=True, timeout=60)
    started = json.loads(record.read_text())
    words = started['argv']
    assert words[0] == 'pipeline.py'
    for name in ('--dataset', '--folder', '--name'):
        assert flag(words, name) == flag(run, name), name
    for name in ('--dataroot', '--recipe'):  # the README's commands run from the repository root
        assert os.path.abspath(os.path.join(started['cwd'], flag(words, name))) == \
            os.path.abspath(os.path.join(REPO_ROOT, flag(run, name))), name
