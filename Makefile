# make install | test | lint | repro | bench
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install test lint repro bench

install: $(VENV)/.installed

# requirements-ray.txt is requirements.txt plus the optional Ray engine (tested in CI).
$(VENV)/.installed: requirements.txt requirements-ray.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $@

test: install
	$(PY) -m pytest

lint: install
	$(PY) -m pylint lib stages tests bench

# Speed and peak memory of each stage, serving latency, search time (a few minutes).
bench: install
	$(PY) -m bench --out bench/results/latest.json

# DVC hashes data/master before any stage runs: refuse a FIFO there before it hangs DVC.
repro: install
	$(PY) stages/check_master.py
	$(VENV)/bin/dvc repro
