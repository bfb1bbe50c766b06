# One obvious place for every command a learner, a practitioner or CI runs.
# `make book` is the main job (the executed book in _build/html), `make test` runs the tests;
# both build .venv themselves.

PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch that lies on this machine's disk; override for CUDA, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# Every package installed by name is pinned (what those require in turn is left to pip): pip, the
# package's own dependencies (pyproject.toml gives ranges, so that the package installs beside
# what a user has; here they are installed first, as torch is), every extra (pinned in
# pyproject.toml) and the tools below.
PIP_SPEC := pip==26.3
CORE_PINS := numpy==2.4.6 mmengine==0.10.7
EXTRAS ?= dev,lab
# `make test` also installs and tests the mmdet3d integration; WITH_MMDET3D=no skips it (its tests
# then skip with a message).
WITH_MMDET3D ?= yes
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# nuscenes-devkit is the reference for the metric tests. It pins numpy<2, which mmengine's
# opencv cannot use, so only the evaluation code it needs is installed, without its pins.
REFERENCE_TOOLS := $(VENV)/.installed-reference-tools
# mmdet3d 1.4.0 needs mmcv 2.1.0, which has no wheel for recent torch on PyPI: it is built from
# source once (CPU ops; CUDA ops where nvcc is found; about 13 minutes on 2 cores) in a throwaway
# venv against the same torch, and kept in MMCV_WHEELS for later installs on this machine.
# mmdet3d itself is installed without its declared requirements: they pull nuscenes-devkit 1.1,
# which pins matplotlib<3.6 (built for numpy 1, broken beside numpy 2) and open3d (0.5 GB, unused
# here); the `mmdet3d` extra in pyproject.toml lists what mmdet3d imports instead.
MMCV_VERSION := 2.1.0
MMCV_WHEELS ?= $(HOME)/.cache/bevdistill/wheels/$(subst ==,-,$(firstword $(TORCH_SPEC)))
MMCV_BUILD_VENV := $(MMCV_WHEELS)/.build-venv
MMDET3D := $(VENV)/.installed-mmdet3d
# Notebook cells and tests share two cores: one BLAS/torch thread per process.
export OMP_NUM_THREADS ?= 1
# Notebook 6 trains in short mode (a mechanics check) unless asked otherwise, on any hardware:
# `make book BEVDISTILL_NOTEBOOK_MODE=medium` shows a live gain (minutes); full is for a GPU.
export BEVDISTILL_NOTEBOOK_MODE ?= short

.PHONY: venv mmcv-wheel mmdet3d book lab demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_SPEC)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet $(CORE_PINS)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# The mmcv wheel: reused from MMCV_WHEELS when one was built for this torch, else built there.
mmcv-wheel:
	@if ls $(MMCV_WHEELS)/mmcv-$(MMCV_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "mmcv $(MMCV_VERSION): cached wheel in $(MMCV_WHEELS)"; \
	else \
		echo "mmcv $(MMCV_VERSION): building from source into $(MMCV_WHEELS) (about 13 minutes)"; \
		set -e; mkdir -p $(MMCV_WHEELS); rm -rf $(MMCV_BUILD_VENV); \
		$(PYTHON) -m venv $(MMCV_BUILD_VENV); \
		$(MMCV_BUILD_VENV)/bin/pip install --quiet $(TORCH_SPEC); \
		$(MMCV_BUILD_VENV)/bin/pip install --quiet numpy==2.4.6 wheel==0.48.0 ninja==1.13.2 \
			packaging==26.4; \
		$(MMCV_BUILD_VENV)/bin/pip install --quiet --no-deps setuptools==69.5.1; \
		MMCV_WITH_OPS=1 $(MMCV_BUILD_VENV)/bin/pip wheel --no-build-isolation --no-deps \
			--wheel-dir $(MMCV_WHEELS) mmcv==$(MMCV_VERSION); \
		rm -rf $(MMCV_BUILD_VENV); \
	fi

# mmcv (cached wheel), mmdet 3.2, mmdet3d 1.4.0 and what mmdet3d imports: `bevdistill.mmdet3d`.
mmdet3d: $(MMDET3D)

$(MMDET3D): $(STAMP)
	$(MAKE) mmcv-wheel
	$(PY) -m pip install --quiet --find-links $(MMCV_WHEELS) "mmcv==$(MMCV_VERSION)" -e ".[mmdet3d]"
	$(PY) -m pip install --quiet --no-deps mmdet3d==1.4.0 lyft_dataset_sdk==0.0.8 nuscenes-devkit==1.2.0
	$(PY) -c "import mmcv.ops, mmdet3d.models; print('mmdet3d', mmdet3d.__version__, 'with mmcv', mmcv.__version__)"
	touch $@

$(REFERENCE_TOOLS): $(STAMP)
	$(PY) -m pip install --quiet --no-deps nuscenes-devkit==1.2.0 pyquaternion==0.9.9
	$(PY) -m pip install --quiet cachetools==8.0.2 tqdm==4.70.1 scikit-learn==1.9.1
	touch $@

# Executes the six notebooks and the results page and builds the book into _build/html;
# any Sphinx warning or failing cell fails the build.
book: venv
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "book: open _build/html/index.html"

# JupyterLab on the notebooks, with bevdistill importable (editable install in .venv).
# Jupyter refuses to start as root ("Running as root is not recommended"), yet in most containers
# (Docker, Codespaces-like sandboxes, CI images) the only user is root: there --allow-root is
# added so `make lab` starts; for any other user the flag is left off and Jupyter's check stays.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
lab: venv
	$(VENV)/bin/jupyter lab $(LAB_ROOT_FLAG) notebooks

# A one-screen tour: hook the shipped teacher and a student, print every loss.
demo: venv
	$(PY) -m bevdistill.demo

# A notebook cell gets 4 minutes. A notebook whose cell timed out (a kernel that stopped answering)
# is tried up to twice more, and the test summary lists each rerun with its cell and reason; a
# notebook whose cell failed, and every other test, fails at once (tests/notebook_reruns.py).
test: venv $(REFERENCE_TOOLS) $(if $(filter yes,$(WITH_MMDET3D)),$(MMDET3D))
	$(PY) -m pytest -n 2 --dist loadfile tests notebooks --nbmake --nbmake-timeout=240

lint: venv
	$(VENV)/bin/ruff check bevdistill tests benchmarks

clean:
	rm -rf $(VENV) _build .pytest_cache
