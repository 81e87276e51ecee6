"""Tests for util/progress.py: bars on a terminal only, gone once done."""
import io

from util.progress import progress_bar


class Terminal(io.StringIO):
    """Output that says it is a terminal, as a console's stderr does."""

    def isatty(self):
        return True


def test_a_bar_is_drawn_on_a_terminal_and_erased_when_done():
    terminal = Terminal()
    assert list(progress_bar(range(3), desc='maps', file=terminal)) == [0, 1, 2]
    text = terminal.getvalue()
    assert 'maps' in text and '\n' not in text
    assert text.rsplit('\r', 1)[-1] == ''  # the cursor is back at the start of an empty line


def test_no_bar_in_a_log_file():
    log = io.StringIO()
    with progress_bar(total=3, desc='CRF', file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ''
