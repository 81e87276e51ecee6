"""Scoring and choosing: inference over a split, metrics, post-processing, the val-chosen rules and the
image-level gate."""
