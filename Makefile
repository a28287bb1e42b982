# The two commands: `make book` builds the site, `make test` runs every test.
# Both create the virtual environment .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NBTEST := _build/nbtest
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install book test unit lint notebooks lab execute results clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open _build/html/index.html"

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

# Re-run every notebook in full mode, in place, to refresh the committed outputs
# (without progress bars, which would be saved as stale widgets).
execute: $(STAMP)
	for nb in $(NOTEBOOKS); do \
		COURSE_QUICK=0 COURSE_PROGRESS=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=-1 "$$nb" || exit 1; \
	done
	$(MAKE) results

results: $(STAMP)
	$(BIN)/python -m helpers results README.md

clean:
	rm -rf _build
