"""The run folder: where each file of a run lives, and its JSON records (read, checked, written with hashes)."""
