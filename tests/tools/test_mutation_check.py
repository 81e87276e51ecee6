"""Tests for tools/mutation_check.py: its list matches the code, copies leave the tree alone, verdicts."""
import os
import subprocess
import sys

from conftest import REPO_ROOT, usage_error
from tools import mutation_check
from tools.mutation_check import MUTATIONS, Mutation


def test_every_mutation_applies_once_and_names_tests_that_exist():
    """Checked here, where it costs nothing, so a snippet that moves fails CI and not only the next run."""
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    for mutation in MUTATIONS:
        with open(os.path.join(REPO_ROOT, mutation.path), encoding='utf-8') as handle:
            assert handle.read().count(mutation.original) == 1, mutation.name
        assert mutation.replacement != mutation.original and mutation.tests, mutation.name
        for test in mutation.tests:
            path, name = test.split('::')
            with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as handle:
                assert f'def {name}(' in handle.read(), test


def _git(repo, *args):
    subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True)


def test_copy_holds_the_working_tree_less_ignored_and_deleted_files(tmp_path):
    repo = tmp_path / 'repo'
    repo.mkdir()
    _git(repo, 'init', '-q')
    for name, text in (('.gitignore', 'build/\n'), ('kept.py', 'x = 1\n'), ('deleted.py', 'y = 1\n')):
        (repo / name).write_text(text)
    _git(repo, 'add', '.')
    _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'start')
    (repo / 'kept.py').write_text('x = 2\n')  # uncommitted changes count
    (repo / 'deleted.py').unlink()
    (repo / 'new.py').write_text('z = 1\n')
    (repo / 'build').mkdir()
    (repo / 'build' / 'out.bin').write_bytes(b'ignored')
    mutation_check.copy_repository(str(repo), str(tmp_path / 'copy'))
    assert sorted(os.listdir(tmp_path / 'copy')) == ['.gitignore', 'kept.py', 'new.py']
    assert (tmp_path / 'copy' / 'kept.py').read_text() == 'x = 2\n'


def test_verdicts_and_the_file_is_restored(tmp_path):
    (tmp_path / 'area.py').write_text('def area(w, h):\n    return w * h\n')
    (tmp_path / 'test_area.py').write_text('from area import area\n\n\ndef test_area():\n    assert area(2, 3) == 6\n')

    def verdict(original, replacement):
        mutation = Mutation('m', 'area.py', original, replacement, ('test_area.py::test_area',), 'defect')
        return mutation_check.check(mutation, sys.executable, str(tmp_path), str(tmp_path / 'basetemp'))

    assert verdict('w * h', 'w + h') == ('killed', 'by test_area.py::test_area')
    assert verdict('w * h', 'h * w')[0] == 'SURVIVED'
    assert (tmp_path / 'area.py').read_text() == 'def area(w, h):\n    return w * h\n'
    status, detail = verdict('w ** h', 'w')
    assert status == 'error' and 'found 0 times' in detail
    status, detail = verdict('w', 'v')  # in both lines: ambiguous
    assert status == 'error' and 'found 2 times' in detail


def test_only_takes_names_and_prefixes_and_refuses_unknown_ones(capsys):
    assert [m.name for m in mutation_check.parse(['--only', 'fp-rate,auc-labels-swapped']).mutations] == \
        ['fp-rate-test', 'fp-rate-crf', 'auc-labels-swapped']
    assert '--only: no mutation named nope; names: fused-without-sqrt, ' in \
        usage_error(capsys, mutation_check.parse, ['--only', 'nope'])
