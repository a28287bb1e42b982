# The two commands: `make book` builds the site, `make test` runs every test.
# Both create the virtual environment .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
BOOK_STAMP  := $(VENV)/.installed-book
# The book shows the committed outputs and executes nothing: Jupyter Book is all it needs (no
# torch). The same requirement is in pyproject.toml's dev extra (a test keeps them equal).
BOOK_REQUIREMENT := jupyter-book>=1.0,<2
NBTEST := _build/nbtest
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install book test unit lint notebooks lab execute results clean serve ddp

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Two books from the same notebooks: English at _build/html, Chinese at _build/html/zh (the
# notebooks with their markdown cells translated by translations/zh/, see book/translate.py).
book: $(BOOK_STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	$(BIN)/python book/translate.py build _build/zh_source
	$(BIN)/jupyter-book build _build/zh_source -W --keep-going
	rm -rf _build/html/zh && cp -r _build/zh_source/_build/html _build/html/zh
	@echo "Open _build/html/index.html (English) or _build/html/zh/index.html (中文)"

$(BOOK_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check '$(BOOK_REQUIREMENT)'
	touch $(BOOK_STAMP)

test: unit notebooks book

unit: lint
	$(BIN)/python -m pytest tests

# ruff: pyflakes, pycodestyle, isort and bugbear rules, and the formatter (pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Quick mode on copies, so the committed full-run outputs stay untouched.
notebooks: $(STAMP)
	rm -rf $(NBTEST) && mkdir -p $(NBTEST)
	cp $(NOTEBOOKS) $(NBTEST)/
	cd $(NBTEST) && COURSE_QUICK=1 COURSE_CHECKPOINT_DIR=$(CURDIR)/$(NBTEST)/checkpoints MPLBACKEND=agg \
		$(CURDIR)/$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=600 --rootdir=. -o addopts="" -o testpaths="" *.ipynb

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# Chapter 08's model service on http://127.0.0.1:8000 (interactive docs at /docs). A missing
# course checkpoint is trained first; settings: COURSE_SERVE_* variables (course_serve/settings.py),
# uvicorn's options through SERVE_ARGS, e.g. make serve SERVE_ARGS="--port 8080 --workers 2".
# It installs only what serving needs (the `serve` extra), not the notebook, book and test tools.
serve: $(SERVE_STAMP)
	$(BIN)/python -m course_serve --train-missing $(SERVE_ARGS)

$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[serve]'
	touch $(SERVE_STAMP)

# Chapter 07's training program (the module helpers.train_gpt_ddp) under torchrun: DDP on NPROC
# processes (gloo on the CPU, NCCL on GPUs), e.g. `make ddp NPROC=4 ARGS="--strategy fsdp
# --steps 400"`; outputs in runs/gpt_ddp.
NPROC ?= 2
ARGS  ?=
ddp: $(STAMP)
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m helpers.train_gpt_ddp $(ARGS)

# Re-run every notebook in full mode, in place, to refresh the committed outputs
# (without progress bars, which would be saved as stale widgets).
execute: $(STAMP)
	for nb in $(NOTEBOOKS); do \
		COURSE_QUICK=0 COURSE_PROGRESS=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=-1 "$$nb" || exit 1; \
	done
	$(MAKE) results

results: $(STAMP)
	$(BIN)/python -m helpers results README.md README.zh-CN.md

clean:
	rm -rf _build
