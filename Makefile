# The README's commands. Each target is idempotent: the second run only checks and goes on.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nnlab-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
RECIPE ?= fashion-cnn
ARGS   ?=

.PHONY: setup data browser postgres test-packages train test test-fast bench lint clean

setup: $(STAMP) data

# Two installers, each where it is fast. Plain pip for torch and torchvision: it takes the pinned
# wheels (and their 3 GB of nvidia-* wheels) from the machine's local wheel store, where uv would
# download them again. uv for everything else: pip spent 46 s resolving and installing the ~85 other
# packages (mostly reading PyPI's index pages), uv 8 s. If uv cannot reach the index, pip does it.
# (The pip that venv brings, 23.x, is new enough: no upgrade step on the critical path.)
# `--no-compile` (uv's default too): pip would byte-compile all 13,000 modules of the 6 GB of wheels
# up front (67 s of a 154 s setup on the 2-core machine); instead Python compiles the ~5,800 that get
# imported, once, and caches them. Where PYTHONDONTWRITEBYTECODE is set (as on this machine) nothing
# would be cached and every process would compile torch again (the suite took 351 s instead of 220),
# so the virtualenv's own `nnlab-bytecode.pth` turns caching back on for this virtualenv only.
TORCH_PINS = $(BIN)/python -c 'import tomllib; print(*(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("torch")))'
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile $$($(TORCH_PINS)) 'uv>=0.13,<0.14'
	UV_NATIVE_TLS=1 $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' \
		|| { echo "uv could not install the dependencies (above): pip installs them"; \
		     $(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'; }
	$(BIN)/python -c 'import sysconfig; open(sysconfig.get_path("purelib") + "/nnlab-bytecode.pth", "w").write("import sys; sys.dont_write_bytecode = False\n")'
	touch $(STAMP)

# Debian packages, in one apt-get call for whatever is missing (one `apt-get update`, not one per
# package): real Fashion-MNIST (dataset-fashion-mnist, for train and test) and, for test, Chromium for
# the headless web-page tests (tests/e2e/test_browser.py, driven by Playwright with this binary: no
# browser download), and PostgreSQL's server for the sweep tests on a real database
# (tests/unit/test_sweep_postgres.py starts a throwaway cluster itself). Without apt-get as root
# nothing is installed and the second argument says what follows from that (nothing, where the
# caller says it itself).
define debian
	@missing=""; \
	for want in $(1); do \
		case $$want in \
		dataset-fashion-mnist) [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] \
			&& echo "fashion-mnist: $(FASHION_DIR)" || missing="$$missing $$want";; \
		chromium) command -v chromium >/dev/null 2>&1 \
			&& echo "chromium: $$(command -v chromium)" || missing="$$missing $$want";; \
		postgresql) (command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl) >/dev/null 2>&1 \
			&& echo "postgresql: $$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)" \
			|| missing="$$missing $$want";; \
		esac; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		|| { [ -z "$(2)" ] || echo "apt-get could not install$$missing: $(2)"; }; \
	elif [ -n "$(2)" ]; then \
		echo "no apt-get as root for$$missing: $(2)"; \
	fi
endef

# `make train` goes on without the package: its first run downloads Fashion-MNIST into the cache.
data:
	$(call debian,dataset-fashion-mnist,the first nnlab train downloads Fashion-MNIST (nnlab download fashion-mnist))

browser:
	$(call debian,chromium,without Chromium the browser tests and make screenshots cannot run)

postgres:
	$(call debian,postgresql,without PostgreSQL the sweep tests on a real database cannot run)

# What `make test` needs from Debian, while pip installs the virtualenv beside it. What cannot be
# installed here is named by tests/prerequisites.py, the next step of `make test`.
test-packages:
	$(call debian,dataset-fashion-mnist chromium postgresql,)

train: setup
	$(BIN)/nnlab train $(RECIPE) $(ARGS)

# pip and apt-get at the same time (both mostly wait on downloads); then tests/prerequisites.py checks
# that everything the whole suite needs is there (Chromium, PostgreSQL, playwright, psycopg, the real
# Fashion-MNIST, Tiny Shakespeare) and, where something is not, stops in one line naming it and how to
# get it; then the whole suite, one pytest-xdist worker per core, under NNLAB_REQUIRE_ALL=1: a test
# that would skip for something missing fails instead. `make test PARTIAL=1` (or `make test-fast`)
# runs without what is missing, those tests skipping with the same words.
# Where the shared data folder sits beside the clone (../shared/data, as in CI) and NNLAB_DATA is not
# set, the tests read Tiny Shakespeare, the names and the translation pairs from it.
SHARED_DATA := $(wildcard $(CURDIR)/../shared/data)
ifeq ($(origin NNLAB_DATA)-$(if $(SHARED_DATA),found),undefined-found)
test test-fast notebooks lab: export NNLAB_DATA = $(abspath $(SHARED_DATA))
endif

test:
	$(MAKE) --no-print-directory -j2 $(STAMP) test-packages
	@$(BIN)/python tests/prerequisites.py $(if $(PARTIAL),--partial)
	$(if $(PARTIAL),,NNLAB_REQUIRE_ALL=1 )$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m 'not slow'

bench: setup
	$(BIN)/nnlab speedrun fashion-92 --baselines

# benchmarks/peers.py: PyTorch Lightning, fastai and Keras 3 (torch backend) in a virtualenv of their
# own (the main install stays lean), each installed beside the same torch 2.14.1 from the local wheel
# store (plain pip, pinned by a constraint); a peer pip cannot install beside it is left out, with
# pip's reason printed. Then one run of all of them, under the shared benchmark lock.
PEERS_VENV := build/peers-venv
PEER_PACKAGES := 'pytorch-lightning>=2.6,<2.7' 'fastai>=2.8,<2.9' 'keras>=3,<4'
.PHONY: bench-peers
bench-peers: setup
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	echo 'torch==2.14.1' > $(PEERS_VENV)/torch-pin.txt
	$(PEERS_VENV)/bin/python -m pip install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
	@for peer in $(PEER_PACKAGES); do \
		$(PEERS_VENV)/bin/python -m pip install --quiet -c $(PEERS_VENV)/torch-pin.txt "$$peer" \
		|| echo "bench-peers: $$peer cannot be installed beside torch 2.14.1 (pip's reason above): left out"; \
	done
	flock /tmp/nnlab-bench.lock $(BIN)/python benchmarks/peers.py

# The README's pictures of `nnlab serve`'s page: small runs trained in seconds, served, shot in
# Debian's Chromium (scripts/screenshots.py), written to docs/studio-*.png.
.PHONY: screenshots
screenshots: setup browser
	$(BIN)/python scripts/screenshots.py --out docs

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# The lesson notebooks: notebooks/src/NN_name.py (jupytext's percent format) -> notebooks/NN_name.ipynb,
# each executed in a kernel of the virtualenv and saved with its outputs, one at a time, in full mode (every
# lesson trains its recipe as documented: hours in all on 2 cores), under the benchmark lock so that no two
# full trainings run at once. NB=04 runs only the lessons whose names start so; QUICK=1 runs quick mode
# (NNLAB_QUICK=1: what make test runs, seconds of training each). Each notebook's first cell says when,
# where and in which mode it ran.
.PHONY: notebooks lab
notebooks: export NNLAB_QUICK = $(QUICK)
notebooks: setup
	flock /tmp/nnlab-bench.lock $(BIN)/python notebooks/build.py --execute $(NB)

# JupyterLab on the virtualenv's kernel, in notebooks/. Optional, so not part of setup: installed into the
# virtualenv on first use. JUPYTER_PATH puts the virtualenv's own python3 kernel first (a python3 kernel of
# the user's, in ~/.local/share/jupyter, would otherwise be found before it); as root (a container) it needs
# --allow-root. LAB_ARGS: JupyterLab's own options (--no-browser --port 8890 ...).
lab: setup
	$(BIN)/python -c 'import jupyterlab' 2>/dev/null || $(BIN)/python -m pip install --quiet 'jupyterlab>=4'
	cd notebooks && JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter ../$(BIN)/jupyter lab \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)
