# The Patch Diffusion Book: every command a user or CI needs.
#   make book    set up .venv, fetch the data, build the book offline, print the path of index.html
#   make test    set up .venv, fetch the data, run unit tests, nbval on the chapters, papermill
#                smoke runs of the experiment notebooks, the strict book build and a browser check
SHELL  := /bin/bash
PY     ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PDLIB_DATA ?= $(CURDIR)/data
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: venv data sysdeps test test-fast book check-book execute lab bench vendor-js clean-book

venv: $(STAMP)
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Offline data into $(PDLIB_DATA): Fashion-MNIST (Debian package), Google emoji (npm), digits (sklearn).
data: $(STAMP)
	$(BIN)/python -m pdlib.data fetch all

# System packages the browser check needs (CI runs as root).
sysdeps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install -y chromium'"; exit 1; fi; }

# Everything CI checks. PDLIB_QUICK=1 shrinks the chapters' training runs (see README).
# tests/test_book.py runs the strict book build into a temporary folder and checks the preface
# and chapter 1 in headless Chromium.
test: $(STAMP) data sysdeps vendor-js
	PDLIB_QUICK=1 $(BIN)/python -m pytest tests notebooks/0*.ipynb book/results.ipynb --nbval-lax --nbval-current-env -p no:cacheprovider

# Unit tests only (seconds to minutes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not notebooks"

book: $(STAMP) data vendor-js
	$(BIN)/jupyter-book build . --all -W -n --keep-going
	@echo "The book: $(CURDIR)/_build/html/index.html"

check-book: $(STAMP) sysdeps
	$(BIN)/python scripts/check_book.py --page book/intro.html --require-math --screenshot _build/intro.png
	$(BIN)/python scripts/check_book.py --page notebooks/01_sigma_space.html --require-figure

# Re-execute every chapter at its defaults, in place (see README for how long this takes).
execute: $(STAMP) data
	for nb in notebooks/0*.ipynb book/results.ipynb; do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 "$$nb" || exit 1; \
	done

lab: $(STAMP) data
	$(BIN)/jupyter lab notebooks/

# The benchmarks' peer (diffusers UNet2DModel) is installed for the benchmarks only, --no-deps.
bench: $(STAMP)
	$(BIN)/pip install -q --no-deps -r requirements-bench.txt
	for b in benchmarks/*.py; do case $$b in */common.py) ;; *) $(BIN)/python $$b || exit 1;; esac; done

# Widget JavaScript (RequireJS, @jupyter-widgets/html-manager) from npm into book/static/;
# idempotent: npm runs only when the files do not match book/static/SHA256SUMS.
vendor-js:
	bash scripts/vendor_js.sh

clean-book:
	rm -rf _build
