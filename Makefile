# The two commands a user needs: `make demo` and `make test`. Both call `make setup`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup test lint demo bench browser clean lock

setup: $(STAMP)

# Re-run the install when the dependency list changes.
$(STAMP): pyproject.toml requirements-dev.txt requirements.lock tools/build_deepspeed_ops.py
	@command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng) \
		|| echo "WARNING: espeak-ng missing and could not be installed; corpus synthesis will fail"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -r requirements-dev.txt
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	$(BIN)/python tools/build_deepspeed_ops.py  # once here, not inside the first job
	touch $(STAMP)

# ruff, then the architecture: import-linter's contracts in pyproject.toml (docs/architecture.md#layers), then
# the structure rules: no function in unispeech_platform/ over 80 lines, no import cycle (tools/lint_structure.py).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python tools/lint_structure.py

# Headless Chromium for the MLflow UI test only: `make demo` does not wait for it.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "WARNING: chromium missing and could not be installed; tests/test_mlflow_ui.py will be skipped"

test: setup lint browser
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m jobs.quickstart --overwrite

bench: setup
	$(BIN)/python bench/model_step.py

# Record the venv's versions as the new lock (after an upgrade in the venv and a green `make test`).
lock:
	( sed -n '1,3p' requirements.lock; $(BIN)/pip freeze --exclude-editable ) > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
