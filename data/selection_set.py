"""The selection set: the images test.py chooses its rule and gate on and crf.py its parameters on.

It is val, then the labelled images of a few-shot folder held out of training (``--select_few``:
``few_sample/<name>``), then the normal images held out of B_weak (``--hold_out_normals N``, by patient
with ``--hold_out_group REGEX``), which have no label.
"""
from typing import NamedTuple, Optional

from data.layout import few_shot_pairs, held_out_normals


class SelectionSet(NamedTuple):
    """``labelled``: the (image, label) pairs of val then of the few-shot folder; ``normals``: the paths of
    the held-out normal images."""
    labelled: list[tuple[str, str]]
    normals: list[str]

    def pairs(self) -> list[tuple[str, Optional[str]]]:
        """Every (image, label or None) pair in order: the labelled ones, then the normals without label."""
        return self.labelled + [(path, None) for path in self.normals]


def selection_set(folder_dir: str, val: list[tuple[str, str]], select_few: Optional[str] = '',
                  hold_out_normals: int = 0, hold_out_group: str = '') -> SelectionSet:
    """The selection set of dataset folder ``folder_dir`` given val's checked ``val`` pairs: those, the pairs of
    ``few_sample/<select_few>`` when it is named, and the normal images held out as ``hold_out_normals`` and
    ``hold_out_group`` say (data.layout.hold_out_spec of a run's options or selection record).

    SystemExit naming a missing or incomplete few-shot folder (data.layout.few_shot_pairs); LayoutError when
    normals are held out but there is no single B_weak folder or a name misses ``hold_out_group``.
    """
    labelled = list(val) + (few_shot_pairs(folder_dir, select_few) if select_few else [])
    return SelectionSet(labelled, held_out_normals(folder_dir, hold_out_normals, hold_out_group))
