# The README's commands. Each target is idempotent: the second run only checks and goes on.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nnlab-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
RECIPE ?= fashion-cnn
ARGS   ?=

.PHONY: setup data browser train test test-fast bench lint clean

setup: $(STAMP) data

# Plain pip on purpose: it takes the pinned torch/torchvision from the machine's local wheel store.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST from Debian's package where apt is available; elsewhere nnlab downloads it.
data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "fashion-mnist: $(FASHION_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "apt-get could not install dataset-fashion-mnist; nnlab will download Fashion-MNIST on first use"; \
	else \
		echo "no apt-get as root: nnlab will download Fashion-MNIST on first use"; \
	fi

# Debian's Chromium for the headless web-page test (tests/e2e/test_browser.py, driven by Playwright
# with this binary: no browser download); where it cannot be installed that test skips, saying why.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "apt-get could not install chromium; the browser test will be skipped"; \
	else \
		echo "no apt-get as root: install chromium to run the browser test"; \
	fi

train: setup
	$(BIN)/nnlab train $(RECIPE) $(ARGS)

test: setup browser
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m 'not slow'

bench: setup
	$(BIN)/python benchmarks/fashion_time_to_accuracy.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
