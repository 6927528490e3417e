# make install | test | lint | repro | bench | preset
# One install path: the README's quick start and these targets share .venv and
# requirements.txt; pip leaves what is installed as it is, so nothing is reinstalled.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install install-test test unit lint repro quality bench preset

install: $(VENV)/.installed

# requirements-ray.txt is requirements.txt plus the optional Ray engine (tested in CI).
install-test: $(VENV)/.installed-test

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-ray.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $@

test: install-test
	$(PY) -m pytest

# The fast part alone: no model, no DVC run.
unit: install-test
	$(PY) -m pytest tests/unit

lint: install-test
	$(PY) -m pylint lib stages tests bench

# Speed and peak memory of each stage, serving latency, search time (a few minutes).
bench: install-test
	$(PY) -m bench --out bench/results/latest.json

# The quality gate: rebuild the demo, then refuse a mAP drop of more than 0.005 against
# the metrics committed at HEAD (exit 3), printing what changed in the rankings.
quality: repro
	$(PY) stages/evaluate.py --against HEAD --max-map-drop 0.005

# DVC hashes data/master before any stage runs: refuse a FIFO there before it hangs DVC.
repro: install
	$(PY) stages/check_master.py
	$(VENV)/bin/dvc repro

# Merges a preset (presets/NAME.yaml, default recommended) into params.yaml, comments
# kept, and prints the equivalent `dvc exp run -S ...` line; then `make repro` builds it.
NAME ?= recommended
preset: install
	$(PY) stages/preset.py presets/$(NAME).yaml
