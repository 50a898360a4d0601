# Everyday commands. `make run` and `make test` work on a fresh clone: they create
# the virtualenv and install everything from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/axis-relay dev

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench cloud
	$(BIN)/ruff format --check relay tests bench cloud
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format relay tests bench cloud
	$(BIN)/ruff check --fix relay tests bench cloud

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
