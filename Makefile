# The few commands a user types. `make run` does the main job, `make test` the tests;
# both set up the virtualenv (and fetch the dataset) first when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/clothing-dataset-small
XCEPTION_WEIGHTS ?= imagenet
DATASET_URL := https://github.com/alexeygrigorev/clothing-dataset-small
export DATA_DIR XCEPTION_WEIGHTS

.PHONY: run test lint setup data clean bench-parity

run: setup data
	@echo "Nothing to run yet beyond set-up: training, conversion and serving land next."

test: setup data lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable ".[dev]"
	touch $@

data: $(DATA_DIR)/train

$(DATA_DIR)/train:
	git clone --depth 1 $(DATASET_URL) $(DATA_DIR)

bench-parity: setup data
	$(BIN)/python bench/preprocessing_parity.py

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
