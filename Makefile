# Two commands are all a newcomer needs: `make demo` and `make test`.
# Both create the environment first if it is missing (scripts/setup_env.sh).
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export RAY_AUTH_MODE := disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test-deps demo test test-fast test-paper-full lint format ui clean

setup:
	@bash scripts/setup_env.sh

# Headless Chromium for the UI test (Debian's package; root installs it, as in CI).
test-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(VENV)/bin/psft-run specs/demo.yaml

test: setup test-deps
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not paper_full"

# The four paper specs' toy profiles at full size, for real (deselected from `make test`).
test-paper-full: setup
	$(PY) -m pytest -q -m paper_full tests/e2e/test_paper_specs_real.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

ui: setup
	bash scripts/prefect_ui.sh

clean:
	rm -rf results/artifacts results/runs results/index.duckdb results/inputs results/.lock
