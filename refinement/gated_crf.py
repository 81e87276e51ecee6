"""The dense CRF after the image-level gate, for crf.py, pseudo.py and predict.py alike: an image the gate
emptied keeps its empty mask (the CRF would grow one from the map), the others are refined."""
from typing import Callable, Sequence, TypeVar, Union

import numpy as np

from refinement.crf_utils import read_prob

Pair = TypeVar('Pair', bound=tuple)


def _empty_mask(prob: Union[str, np.ndarray]) -> np.ndarray:
    """An all-False mask of the map's size (a path is read as test.py's 16-bit map)."""
    return np.zeros((prob if isinstance(prob, np.ndarray) else read_prob(prob)).shape, bool)


def refine_ungated(pairs: Sequence[Pair], gated: Sequence[bool],
                   refine: Callable[[list[Pair]], Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The bool masks of (image, calibrated map) ``pairs`` in their order: empty for those whose ``gated`` flag
    is set, ``refine``'s for the others, given to it in one call (so a worker pool shares them) and returned
    by it in order (crf_utils.refine_many for files, refine_arrays for arrays)."""
    if len(pairs) != len(gated):
        raise ValueError(f'{len(pairs)} images but {len(gated)} gate flags')
    refined = iter(refine([pair for pair, skip in zip(pairs, gated) if not skip]))
    return [_empty_mask(pair[1]) if skip else next(refined) for pair, skip in zip(pairs, gated)]
