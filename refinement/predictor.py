"""A weights file's stored choices applied to images in memory, for predict.py's photographs and volume
slices alike: the network's map, the rule (threshold, post-processing, image-level gate), the dense CRF."""
from dataclasses import dataclass

import numpy as np

from refinement.crf_utils import refine_arrays
from refinement.gated_crf import refine_ungated
from evaluation.inference import predict_batch
from evaluation.selection import apply_rule, gate_rejects


@dataclass
class Prediction:
    """One image's result at its own size: ``mask`` (bool; the CRF's once ``refine`` ran), ``prob`` (the
    calibrated float32 map: >= 0.5 is the mask before the CRF) and ``score`` (image-level lesion
    probability, or None)."""
    mask: np.ndarray
    prob: np.ndarray
    score: float


class Predictor:
    """``model`` with ``rule`` (a stored selection: map_mode, binarize, threshold, postprocess, gate) and
    ``crf`` (CRFParams, or None for no CRF), refining in ``pool`` (refinement.crf_utils.crf_pool) or here."""

    def __init__(self, model, rule, crf=None, pool=None):
        self.model, self.rule, self.crf, self.pool = model, rule, crf, pool

    def decide(self, images, raws):
        """[Prediction] before the CRF of network inputs ``images`` (B x C x S x S) of the uint8
        H x W x 3 arrays ``raws``."""
        mode = self.rule['map_mode']
        predictions = []
        for item in predict_batch(self.model, images, raws, modes=[mode]):
            mask, prob = apply_rule(self.rule, item['maps'][mode], item['score'])
            predictions.append(Prediction(mask, prob, item['score']))
        return predictions

    def refine(self, raws, predictions):
        """Replace each mask by the CRF's (all at once, so the pool's workers share the work); an image
        its gate rejected keeps its empty mask."""
        if self.crf is None:
            return
        masks = refine_ungated([(raw, p.prob) for raw, p in zip(raws, predictions)],
                               [gate_rejects(self.rule, p.score) for p in predictions],
                               lambda todo: refine_arrays(todo, self.crf, self.pool))
        for prediction, mask in zip(predictions, masks):
            prediction.mask = mask
