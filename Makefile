# Two entry points of the quick start; both set up .venv first (idempotent). `make lint`: ruff, settings in
# pyproject.toml.
.PHONY: setup demo test test-fast lint

setup:
	bash tools/setup_env.sh

demo: setup
	bash start_train.sh --resume True  # a second make demo keeps the trained run
	bash start_test.sh
	bash start_crf.sh

test: setup
	.venv/bin/python -m pytest -q

# The unit tests alone (no test marked slow or browser in pyproject.toml): what to run while editing.
test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow and not browser"

lint: setup
	.venv/bin/ruff check .
