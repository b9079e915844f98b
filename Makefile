# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run the main job on the built-in example
#   make test   - install, then lint and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE := example-output

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned first: its CPU wheel is local; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[fuse,dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m hf_analyze.example $(EXAMPLE)
	$(VENV)/bin/hf-analyze --target $(EXAMPLE)/smollm2-target --source $(EXAMPLE)/gemma3-source \
		--source $(EXAMPLE)/qwen-source --block-size auto -o $(EXAMPLE)/plan.h5 --json $(EXAMPLE)/analysis.json --force

bench: $(STAMP)
	$(PY) benchmarks/bench_analyze.py

clean:
	rm -rf $(VENV) $(EXAMPLE) .pytest_cache .ruff_cache
