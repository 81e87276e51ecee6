"""Progress bars of the short loops (inference, CRF): drawn on a terminal only and erased when done, so
what a script prints after them (its result table) starts on a line of its own. In a log file a bar is
only carriage returns, which would leave its last state on the table's line."""
from tqdm import tqdm


def progress_bar(iterable=None, **kwargs):
    """tqdm over ``iterable`` (or with ``total=``) on stderr: not drawn when stderr is not a terminal, gone
    once closed."""
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=None, **kwargs)
