# make demo: create .venv if needed, install, run the main job on the embedded default.
# make test: the test suite without the tests marked slow, on two pytest-xdist workers (7-10 minutes on a 2-core machine).
# make test-slow: the slow ones (encoder bundles opened by every tool, the encoder export's check count, the lookup-table kernel run, ten SIGTERM trials, 8x500 serving, DDP); CI runs both.
# make defaults: retrain the shipped default checkpoints (models/<family>/defaults/) with the current code
#   and recipes (3 min 31 s on an idle 2-core host; the tensors came out identical to the shipped ones).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean bench defaults

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch when none is installed (plain `torch` would pull a 5.5 GB CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[runtime,export,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m geofractal_edge.demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" -n 2 --dist loadfile tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slow tests

defaults: $(STAMP)
	$(PY) -m geofractal_edge.models.defaults

bench: $(STAMP)
	$(PY) benchmarks/atlas_key_switch.py
	$(PY) benchmarks/atlas_key_capacity.py

clean:
	rm -rf $(VENV) build *.egg-info demo-out
