# Two entry points of the quick start; both set up .venv first (idempotent).
.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	bash start_train.sh --resume True  # a second make demo keeps the trained run
	bash start_test.sh
	bash start_crf.sh

test: setup
	.venv/bin/python -m pytest -q
