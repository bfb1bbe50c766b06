# One obvious place for every command a learner, a practitioner or CI runs.
# `make book` is the main job (the executed book in _build/html), `make test` runs the tests;
# both build .venv themselves.

PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch that lies on this machine's disk; override for CUDA, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,lab
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# nuscenes-devkit is the reference for the metric tests. It pins numpy<2, which mmengine's
# opencv cannot use, so only the evaluation code it needs is installed, without its pins.
REFERENCE_TOOLS := $(VENV)/.installed-reference-tools
# Notebook cells and tests share two cores: one BLAS/torch thread per process.
export OMP_NUM_THREADS ?= 1

.PHONY: venv book lab demo test lint clean

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

# Executes the six notebooks and the results page and builds the book into _build/html;
# any Sphinx warning or failing cell fails the build.
book: venv
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "book: open _build/html/index.html"

# JupyterLab on the notebooks, with bevdistill importable (editable install in .venv).
lab: venv
	$(VENV)/bin/jupyter lab notebooks

# A one-screen tour: hook the shipped teacher and a student, print every loss.
demo: venv
	$(PY) -m bevdistill.demo

# Safety net for headless notebook runs: a cell gets 4 minutes, and a notebook that times out is
# retried up to twice (nbmake reports every notebook failure as NotebookFailedException, so a
# failing nbmake notebook is retried too before it fails). The stalls seen here came from ipywidgets
# explorer cells, which are now tagged skip-execution.
NOTEBOOK_RETRY := --reruns 2 --only-rerun "timed out" --only-rerun CellTimeoutError --only-rerun NotebookFailedException

test: venv $(REFERENCE_TOOLS)
	$(PY) -m pytest -n 2 --dist loadfile $(NOTEBOOK_RETRY) tests notebooks --nbmake --nbmake-timeout=240

lint: venv
	$(VENV)/bin/ruff check bevdistill tests benchmarks

clean:
	rm -rf $(VENV) _build .pytest_cache
