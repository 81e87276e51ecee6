"""Dense-CRF refinement of probability maps, and serving a weights file (inference, gate, CRF)."""
