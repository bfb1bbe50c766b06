# One obvious place for every command a learner, a practitioner or CI runs.
# `make demo` is the main job, `make test` runs the tests; both build .venv themselves.

PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch that lies on this machine's disk; override for CUDA, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

# nuscenes-devkit is the reference for the metric tests. It pins numpy<2, which mmengine's
# opencv cannot use, so only the evaluation code it needs is installed, without its pins.
REFERENCE_TOOLS := $(VENV)/.installed-reference-tools

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(REFERENCE_TOOLS): $(STAMP)
	$(PY) -m pip install --quiet --no-deps nuscenes-devkit==1.2.0 pyquaternion==0.9.9
	$(PY) -m pip install --quiet cachetools tqdm scikit-learn
	touch $@

demo: venv
	$(PY) -m bevdistill.demo

test: venv $(REFERENCE_TOOLS)
	$(PY) -m pytest -n 2 --dist loadfile

lint: venv
	$(VENV)/bin/ruff check bevdistill tests

clean:
	rm -rf $(VENV) _build .pytest_cache
