# Two commands do all set-up: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned here, not in pyproject: this exact release has a CPU wheel on CI's disk,
# and on a GPU machine pip takes its CUDA build from PyPI.
TORCH_VERSION ?= 2.13.0
# On a machine without a GPU and with PyPI only, PyPI's torch is the multi-GB CUDA build:
# `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes PyTorch's CPU build instead.
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed

.PHONY: gpu-swap demo test check lint fuzz serve data bench-quality bench-speed report-screenshot clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[train,flows,gpu,dev]'
	$(MAKE) --no-print-directory gpu-swap
	touch $(STAMP)

# onnxruntime-gpu and onnxruntime share one folder: where the `gpu` extra brought the first,
# the second goes and the first is laid down again whole (onnxruntime's documented swap;
# `vad runtime` says which is active). Where it did not (macOS, ARM), nothing changes.
gpu-swap:
	if $(BIN)/python -m pip show --quiet onnxruntime-gpu 2>/dev/null && $(BIN)/python -m pip show --quiet onnxruntime 2>/dev/null; then \
	  $(BIN)/python -m pip uninstall --quiet --yes onnxruntime && \
	  $(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
	    "onnxruntime-gpu==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("onnxruntime-gpu"))')"; \
	fi

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

test: lint
	$(BIN)/python -m pytest

# The fast tier while you work: the static checks and every test not marked slow.
check: lint
	$(BIN)/python -m pytest -m "not slow"

# Static checks, run by `make test`: ruff (defects and import order), mypy, and the import
# contracts in pyproject.toml (lint-imports: which folder may import what, and that scoring
# never loads torch, onnx or scikit-learn), and that `vad` starts without them
# (tests/cli_imports.py: the CLI imports training lazily, which a contract cannot tell apart).
lint: $(STAMP)
	$(BIN)/ruff check pipeline flows tests bench examples data
	$(BIN)/ruff format --check pipeline flows tests bench examples data
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tests/cli_imports.py

# The dedicated fuzz run: over 10,000 generated inputs (docs/reliability.md, "Fuzzing").
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py --hypothesis-show-statistics

# Scheduled scoring for a newcomer: a local Prefect server (UI address printed), the demo
# model if none is exported yet, and the deployment scoring every batch dropped into data/inbox.
serve: $(STAMP)
	test -f exported/demo-sensors/latest || $(BIN)/python -m pipeline.demo
	mkdir -p data/inbox
	$(BIN)/python -m flows.serve --inbox data/inbox --model exported/demo-sensors --interval 60

bench-quality: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[train,flows,bench]'
	$(MAKE) --no-print-directory gpu-swap
	$(BIN)/python bench/quality.py

bench-speed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[train,flows,bench]'
	$(MAKE) --no-print-directory gpu-swap
	$(BIN)/python bench/speed.py

# The demo's HTML scoring report opened in headless Chromium: runs/report.png (needs chromium).
report-screenshot: $(STAMP)
	$(BIN)/python bench/report_screenshot.py

data: $(STAMP)
	$(BIN)/python data/generate.py

clean:
	rm -rf $(VENV) exported/demo-* runs/ data/inbox/
