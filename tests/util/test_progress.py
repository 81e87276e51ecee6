"""Tests for util/progress.py: a bar on a terminal (gone once done), plain lines now and then in a log."""
import io

from conftest import Terminal
from util import progress
from util.progress import progress_bar


class Clock:
    """time.monotonic() of util.progress, moved by hand."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr(progress.time, 'monotonic', lambda: self.now)
        monkeypatch.setattr(progress, '_last_line', [self.now])


def test_a_bar_is_drawn_on_a_terminal_and_erased_when_done():
    terminal = Terminal()
    assert list(progress_bar(range(3), desc='maps', file=terminal)) == [0, 1, 2]
    text = terminal.getvalue()
    assert 'maps' in text and '\n' not in text
    assert text.rsplit('\r', 1)[-1] == ''  # the cursor is back at the start of an empty line


def test_a_short_loop_in_a_log_file_prints_nothing(monkeypatch):
    Clock(monkeypatch)
    log = io.StringIO()
    with progress_bar(total=3, desc='CRF', file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ''


def test_a_long_loop_in_a_log_prints_a_line_every_30_s_with_counts_rate_and_time_left(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    with progress_bar(total=40, desc='CRF search (300 settings)', unit='img', file=log) as bar:
        for _ in range(40):
            clock.now += 10  # one image per 10 s: a line every third image (30 s, well over 5 % each)
            bar.update()
    lines = log.getvalue().splitlines()
    assert lines[0] == 'CRF search (300 settings): 3/40 img (8%), 0.10 img/s, 06:10 left'
    assert lines[1] == 'CRF search (300 settings): 6/40 img (15%), 0.10 img/s, 05:40 left'
    assert len(lines) == 14 and lines[-2].startswith('CRF search (300 settings): 39/40 img (98%)')
    assert lines[-1] == 'CRF search (300 settings): 40 img done in 06:40'
    assert '\r' not in log.getvalue()


def test_a_fast_loop_prints_every_5_percent_not_every_30_s(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    for _ in progress_bar(range(1000), desc='maps', unit='img', file=log):
        clock.now += 40  # every update is past 30 s: the 5 % step (50 images) decides
    lines = log.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [f'{n}/1000' for n in range(50, 1000, 50)]
    assert lines[-1] == 'maps: 1000 img done in 11:06:40'


def test_the_30_s_are_counted_across_loops_of_one_process(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    for chunk in range(4):  # pseudo.py's maps come in chunks of 64, a loop each, 12 s per chunk
        for _ in progress_bar(range(64), desc=f'stage-1 maps {64 * (chunk + 1)}/256', unit='img', file=log):
            clock.now += 12 / 64
    assert log.getvalue().splitlines()[:1] == ['stage-1 maps 192/256: 32/64 img (50%), 5.33 img/s, 00:06 left']


def test_unknown_total_prints_counts_and_rate(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    for _ in progress_bar(iter(range(4)), desc='files', file=log):
        clock.now += 31
    assert log.getvalue().splitlines() == ['files: 1 it, 0.03 it/s', 'files: 2 it, 0.03 it/s', 'files: 3 it, 0.03 it/s',
                                           'files: 4 it, 0.03 it/s', 'files: 4 it done in 02:04']


def test_a_closed_file_or_an_object_without_isatty_is_not_a_terminal():
    closed = io.StringIO()
    closed.close()
    assert not progress._is_terminal(closed) and not progress._is_terminal(object())
    assert progress._is_terminal(Terminal())


def test_a_resumed_training_in_a_log_counts_from_its_start_and_shows_the_losses(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    bar = progress_bar(range(101, 201), total=200, initial=100, desc='train ISIC', unit='step', file=log)
    for step in bar:
        clock.now += 1  # one step a second: the rate counts this run's steps, not the 100 done before
        bar.set_postfix({'D_A': '0.25', 'G_total': '1.2e+03'})
    lines = log.getvalue().splitlines()
    assert lines[0] == 'train ISIC: 130/200 step (65%), 1.00 step/s, 01:10 left, D_A=0.25, G_total=1.2e+03'
    assert lines[-1] == 'train ISIC: 200 step done in 01:40'


def test_a_disabled_bar_prints_nothing_even_in_a_log(monkeypatch):
    clock = Clock(monkeypatch)
    log = io.StringIO()
    bar = progress_bar(range(50), desc='train', file=log, disable=True)
    for _ in bar:
        clock.now += 60
        bar.set_postfix({'D_A': '1'})
    bar.close()
    assert log.getvalue() == ''
