# Every target sets itself up first, so `make test` or `make bench MODEL=cellpose` works on a fresh clone.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# MEDIAR's pinned smp 0.3.3 (and what it imports) beside the venv, for the released-layout weights fixtures only
FIXENV  := .envs/fixtures
FIXSTAMP := $(FIXENV)/.installed
# per-model environments (harness/envs.py): a model's own pins beside the venv, e.g. cellpose 4 for cellpose_sam
ENVSTAMP := .envs/.prepared

MODEL   ?= cellpose
DATA    ?= auto
PROFILE ?= quick
DEVICE  ?= auto
RUNS    ?= runs
ARGS    ?=

.PHONY: setup fixtures-env test test-all bench report perf gpu-check lock clean

setup: $(STAMP) $(ENVSTAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

fixtures-env: $(FIXSTAMP)

$(FIXSTAMP): tests/fixtures/requirements-fixtures.txt $(STAMP)
	rm -rf $(FIXENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(FIXENV) -r tests/fixtures/requirements-fixtures.txt
	touch $(FIXSTAMP)

$(ENVSTAMP): $(STAMP) $(wildcard adapters/*.py)  ## once per change of an adapter's requirements (else a no-op)
	mkdir -p $(dir $(ENVSTAMP))
	$(PY) -m harness env prepare all
	touch $(ENVSTAMP)

test: setup fixtures-env
	$(PY) -m pytest -q

test-all: setup fixtures-env  ## heavy tests too (they skip with a reason when weights/GPU are absent)
	$(PY) -m pytest -q -m ""

bench: setup
	$(PY) -m harness bench --model $(MODEL) --data $(DATA) --profile $(PROFILE) --device $(DEVICE) $(ARGS)

report: setup
	$(PY) -m harness report $(RUNS) --out reports $(ARGS)

perf: setup
	$(PY) -m harness perf --out perf.json $(ARGS)

gpu-check: setup  ## the paper rehearsal of every model at 2592x1944 on CUDA (or CPU): s/step, s/image, peak memory
	$(PY) benchmarks/gpu_check.py --out gpu_check.json $(ARGS)

lock: setup  ## re-resolve the pinned set after changing dependencies
	$(PY) -m pip freeze --exclude-editable | sed '1i # Exact set resolved on Python 3.11 (x86_64). `make setup` installs this; regenerate with `make lock`.' > requirements.lock

clean:
	rm -rf $(VENV) .envs .pytest_cache
