"""pyproject.toml lists the same pins as the requirement files tools/setup_env.sh installs, and installs nothing."""
import os
import tomllib

from conftest import REPO_ROOT


def requirements(name):
    """The requirement lines of ``name`` (comments and blank lines dropped)."""
    with open(os.path.join(REPO_ROOT, name), encoding='utf-8') as handle:
        lines = (line.split('#', 1)[0].strip() for line in handle)
        return [line for line in lines if line]


def test_pyproject_pins_are_the_requirement_files():
    with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as handle:
        project = tomllib.load(handle)
    assert project['project']['dependencies'] == requirements('requirements.txt')
    assert project['project']['optional-dependencies']['dev'] == requirements('requirements-dev.txt')
    # The generic top-level names (data, util, models, ...) must not be installable into site-packages.
    assert 'build-system' not in project
