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
# The notebooks' kernel, with the name and display name they are stored with: JupyterLab writes the
# kernelspec's display name into every notebook it opens (tests/test_lab.py checks they agree).
KERNELSPEC := $(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"

.PHONY: venv data sysdeps test test-fast book check-book execute lab bench vendor-js clean-book

venv: $(STAMP)
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	$(KERNELSPEC) >/dev/null
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
# tests/test_book.py runs the strict book build into a temporary folder and checks every page in
# headless Chromium (scripts/check_book.py --all; screenshots in _build/page-check/).
test: $(STAMP) data sysdeps vendor-js
	PDLIB_QUICK=1 $(BIN)/python -m pytest tests notebooks/0*.ipynb book/results.ipynb --nbval-lax --nbval-current-env -p no:cacheprovider

# Unit tests only (seconds to minutes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not notebooks"

book: $(STAMP) data vendor-js
	$(BIN)/jupyter-book build . --all -W -n --keep-going
	@echo "The book: $(CURDIR)/_build/html/index.html"

# Every page of the built book in headless Chromium, networking off (after `make book`);
# screenshots and report.json land in _build/page-check/.
check-book: $(STAMP) sysdeps
	$(BIN)/python scripts/check_book.py --all

# Re-execute every chapter at its defaults, in place (see README for how long this takes), then
# store it as JupyterLab saves it (scripts/normalize_notebooks.py), so opening it in Lab changes nothing.
execute: $(STAMP) data
	for nb in notebooks/0*.ipynb book/results.ipynb; do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 "$$nb" || exit 1; \
	  $(BIN)/python scripts/normalize_notebooks.py "$$nb" || exit 1; \
	done

# JupyterLab on the book's notebooks, as the README's "JupyterLab" section describes. Before it
# starts: the kernelspec the notebooks are stored with, and the Lab settings of
# book/lab-overrides.json (no widget state saved, no news or update checks), so opening or saving a
# notebook changes no file; the notebooks are trusted for this user (`jupyter trust` records their
# signatures in ~/.local/share/jupyter/nbsignatures.db, the files are not touched), so their saved
# widgets and animations render before any re-run. Serves the repository on localhost only, the
# file browser in notebooks/; as root (the README allows it) with --allow-root.
# More server options: make lab LAB_ARGS="--no-browser --port 8890".
LAB_NOTEBOOKS := notebooks/*.ipynb notebooks/experiments/*.ipynb book/*.ipynb
LAB_SETTINGS  := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP) data
	@$(KERNELSPEC) >/dev/null
	@install -D -m 644 book/lab-overrides.json $(LAB_SETTINGS)
	@$(BIN)/jupyter trust --log-level=ERROR $(LAB_NOTEBOOKS) >/dev/null
	@echo "JupyterLab on $(CURDIR), localhost only; the file browser opens in notebooks/."
	@echo "  The notebooks are stored executed and trusted for you: their saved figures, widgets and"
	@echo "  animations show without running anything, and opening or saving one leaves the file as it is."
	@echo "  Profile: $(if $(filter 1,$(PDLIB_QUICK)),QUICK (PDLIB_QUICK=1),FULL (the book's defaults))."
	@echo "  'Run All' in a chapter retrains at the book's full size: on 2 CPU cores about 6 min (chapter 1),"
	@echo "  2 min (chapter 2), 11 min (chapter 3) the first time; under a minute (chapter 3: 6.5) once cached."
	@echo "  Quick profile (seconds; the numbers are then not the book's): PDLIB_QUICK=1 make lab"
	@echo "  Runs (checkpoints, logs, samples) go to $(CURDIR)/runs/ (git-ignored)."
	@echo "  Lab saves no widget state: a widget re-run here reaches the book through make execute."
	$(BIN)/jupyter lab --ServerApp.ip=localhost --ServerApp.root_dir="$(CURDIR)" \
	  --FileContentsManager.preferred_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

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
