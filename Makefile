# psgan_fast — the two commands: `make train` and `make test`.
#
# Expensive things are cached outside the clone, keyed by the files that
# define them, so a fresh clone on a machine that has built them before
# reuses them, and a fresh machine builds them from nothing:
#   venv         $(CACHE_DIR)/venv-<sha of requirements.txt + python version>
#   cargo target $(CACHE_DIR)/cargo-<sha of rust/Cargo.toml + rust/Cargo.lock>
# `.venv` in the clone is a symlink to the cached venv.

SHELL := /bin/bash
PYTHON ?= python3
CACHE_DIR ?= $(HOME)/.cache/psgan_fast
ARGS ?=
PYTEST_ARGS ?=

VENV_KEY := $(shell (cat requirements.txt; $(PYTHON) --version 2>&1) | sha256sum | cut -c1-16)
VENV_DIR := $(CACHE_DIR)/venv-$(VENV_KEY)
CARGO_KEY := $(shell cat rust/Cargo.toml rust/Cargo.lock 2>/dev/null | sha256sum | cut -c1-16)
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/cargo-$(CARGO_KEY)
PY := .venv/bin/python
# maturin's PEP 517 backend calls the `maturin` executable: find the venv's.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
# The cached venv is shared by every clone on the machine, and its editable
# install points at whichever clone installed last: this clone's package
# comes first for everything make runs (and the processes those start).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
RUST_SOURCES := $(shell find rust/src -name '*.rs') rust/Cargo.toml rust/Cargo.lock
PY_BUILD_FILES := pyproject.toml

.PHONY: setup venv install data train test test-rust test-python bench gpu-check clean

setup: install data

# A venv is complete only once `.complete` exists inside it; a half-built
# one (interrupted install) is thrown away and rebuilt. No file prerequisite:
# the directory name is the hash of requirements.txt, so a changed file means
# a new directory, and a fresh clone's newer mtimes must not rebuild (and
# delete) a venv that other clones are using.
$(VENV_DIR)/.complete:
	@echo "==> building venv $(VENV_DIR) (first time on this machine: a few minutes)"
	rm -rf "$(VENV_DIR)"
	mkdir -p "$(CACHE_DIR)"
	$(PYTHON) -m venv "$(VENV_DIR)"
	"$(VENV_DIR)/bin/python" -m pip install -q --upgrade pip
	"$(VENV_DIR)/bin/python" -m pip install -q -r requirements.txt
	touch "$@"

venv: $(VENV_DIR)/.complete
	@if [ -d .venv ] && [ ! -L .venv ]; then \
	  echo "==> using the existing real directory .venv (not the cache)"; \
	  .venv/bin/python -m pip install -q -r requirements.txt; \
	else ln -sfn "$(VENV_DIR)" .venv; fi

# Build the Rust extension into psgan_fast/ (editable install, release profile).
.make/installed: $(VENV_DIR)/.complete $(RUST_SOURCES) $(PY_BUILD_FILES) | venv
	@echo "==> building the Rust extension psgan_fast._core"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@mkdir -p .make && touch $@

install: venv .make/installed

# Everything the test suite reads: MNIST and Fashion-MNIST, found or fetched
# into the cache and verified (see psgan_fast/data/fetch.py and datasets.py for the sources).
data: install
	$(PY) -m psgan_fast.data fetch --dataset mnist fashion-mnist

train: setup
	$(PY) -m psgan_fast.train --generators 3 $(ARGS)

test-rust:
	cargo test --release --manifest-path rust/Cargo.toml

test-python: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test: setup test-rust test-python

bench: setup
	$(PY) -m pytest bench/ --benchmark-only $(PYTEST_ARGS)

# On a machine with CUDA: the CUDA-only tests and the GPU benchmark
# comparisons in under 8 minutes, summary in runs/gpu-check.md. Without CUDA it
# says so in one line and exits 0.
gpu-check: setup
	@$(PY) -m psgan_fast.gpu_check --out runs/gpu-check.md

clean:
	rm -rf .make .venv psgan_fast/_core*.so .pytest_cache .benchmarks
