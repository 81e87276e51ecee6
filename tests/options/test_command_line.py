"""Tests for options/command_line.py: the recorded command line names each flag once, with the value taken."""
import argparse

import pytest

from options.command_line import effective_argv


@pytest.fixture
def parser():
    parser = argparse.ArgumentParser()
    parser.add_argument('--name')
    parser.add_argument('--iteration', type=int)
    parser.add_argument('--lr', type=float)
    parser.add_argument('--reselect', action='store_true')
    return parser


@pytest.mark.parametrize('argv, expected', [
    ('--name cltnet --iteration 5 --name uxrun', '--iteration 5 --name uxrun'),  # a launcher's, then the user's
    ('--name=a --lr -1 --name b', '--lr -1 --name b'),
    ('--iter 3 --iteration 4', '--iteration 4'),  # an abbreviation names the same flag
    ('--reselect --name a --reselect', '--name a --reselect'),
    ('--name a --unknown 1 --unknown 2', '--name a --unknown 1 --unknown 2'),  # not a flag: kept as given
])
def test_each_flag_once_at_its_last_place_with_its_last_value(parser, argv, expected):
    assert ' '.join(effective_argv(parser, argv.split())) == expected
    known = [word for word in argv.split() if not word.startswith(('--unknown', '1', '2'))]
    assert vars(parser.parse_args(effective_argv(parser, known))) == vars(parser.parse_args(known))
