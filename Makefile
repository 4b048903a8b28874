# Everything runs in a local virtual env; `make run` and `make test` set it up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test docs docs-tutorials bench gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,ray,docs,wandb,robotics]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m torchrl_hier.train

# One pytest worker per core; each test file stays in one worker (module fixtures such as the
# Ray cluster start once).
test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The docs site (docs/_build/html/index.html), warnings as errors as in the tests.
docs: install
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "built docs/_build/html/index.html"

# Runs the tutorials again into docs/tutorials/ (the outputs the docs show; ~1-2 min).
docs-tutorials: install
	$(BIN)/python docs/_tutorials.py

bench: install
	$(BIN)/python benchmarks/throughput.py

gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) outputs multirun dist docs/_build docs/api
