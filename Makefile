# The few commands a user types: `make run` does the main job, `make test` runs the tests.
# `make help` lists every target. The venv and the dataset are set up on first use.

.DEFAULT_GOAL := help

# The venv's Python: the Lambda runtime's 3.12 when a working one is found (a pyenv shim
# may exist and fail, so each candidate is run), else python3. `make PYTHON=...` overrides.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 \
	python3; do "$$p" -c '' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
endif
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch path has its own venv: torch==2.13.0 installs as a CPU build only on Python 3.11
# (a local wheel; elsewhere the same pin is the multi-GB CUDA build). `make TORCH_PYTHON=...`.
ifeq ($(origin TORCH_PYTHON),undefined)
TORCH_PYTHON := $(shell for p in python3.11 $$(pyenv root 2>/dev/null)/versions/3.11*/bin/python3.11; \
	do "$$p" -c '' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
endif
TORCH_VENV ?= .venv-torch
TORCH_BIN := $(TORCH_VENV)/bin
DEPLOY_VENV ?= .venv-deploy
DEPLOY_BIN := $(DEPLOY_VENV)/bin
UV_VERSION := 0.13.9
LOCK_VENV ?= .venv-lock

DATA_DIR ?= data/clothing-dataset-small
XCEPTION_WEIGHTS ?= imagenet
DATASET_URL := https://github.com/alexeygrigorev/clothing-dataset-small
export DATA_DIR XCEPTION_WEIGHTS

# What `make run` builds, as files, so that it redoes only what changed.
TRAINING := artifacts/training/manifest.json
MODEL := artifacts/model/serve.onnx
TRAIN_SETTINGS := artifacts/.make/train-settings
TRAIN_INPUTS := $(wildcard training/*.py) lambda_function/preprocessing.py $(TRAIN_SETTINGS) \
	$(patsubst %/,%,$(wildcard $(DATA_DIR)/*/*/))
CONVERT_INPUTS := $(TRAINING) $(wildcard convert/*.py) lambda_function/preprocessing.py \
	lambda_function/model_metadata.py lambda_function/model.py lambda_function/files.py \
	lambda_function/config.py training/data.py
# Every conversion writes serve.onnx, the one model the image ships: the int8 variant when it
# stayed within 1 point of fp32's accuracy, fp32 otherwise (docs/conversion.md).
# CONVERT_FLAGS="--optimize --int8" adds the optimised graph.
CONVERT_FLAGS ?= --int8

# One photo of a few classes from the test split: what `make classify` shows by default.
SAMPLES ?= $(foreach c,pants shoes dress t-shirt,$(firstword $(sort $(wildcard $(DATA_DIR)/test/$(c)/*.jpg))))
IMAGES ?= $(SAMPLES)

PYTEST := $(BIN)/python -m pytest
# Test suites with an environment of their own add their target here (e.g. `test-torch`):
# `make test` runs them after pytest in the main venv.
EXTRA_TESTS ?= test-torch

.PHONY: help run train convert classify test test-pytest test-fast bench-smoke lint lint-deploy \
	check setup setup-deploy lock data clean FORCE \
	bench-parity bench-convert bench-serve bench-soak bench-runtimes \
	backfill bench-backfill bench-memory mutation \
	setup-torch test-torch train-torch export-torch

help: ## list the targets
	@echo "Python for $(VENV): $(or $(PYTHON),none found: set PYTHON=...)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: $(MODEL) | setup ## train, convert, classify sample photos (only the steps whose inputs changed)
	$(BIN)/python -m lambda_function $(IMAGES)

train: $(TRAINING) ## cross-validate + train the shipped 299 px model on all photos -> artifacts/training/

convert: $(MODEL) ## the best run -> verified ONNX, served as artifacts/model/serve.onnx

classify: | setup ## classify IMAGES (files or URLs) through the Lambda handler
	$(BIN)/python -m lambda_function $(IMAGES)

# Training reruns when its code, the dataset's folders or its settings change. The shipped
# model (docs/model-quality.md): the method cross-validation chose (SHIP_METHOD), its
# calibration (temperature, `confident` threshold) fitted on out-of-fold predictions, then
# trained on every labelled photo. TRAIN_ARGS adds `python -m training cv` options.
# SHIP_METHOD=ft-block13-swa ships the fine-tuned recipe cross-validation chose: 2.3
# points better out of fold, over an hour on 2 cores (default `today` fits make run in 15 min).
SHIP_METHOD ?= today
$(TRAINING): $(TRAIN_INPUTS) | setup data
	$(BIN)/python -m training cv --methods $(SHIP_METHOD) --output-dir artifacts/cv-ship \
		--ship artifacts/training $(TRAIN_ARGS)

# Rewritten only when the settings differ, so that its date says when they last changed.
$(TRAIN_SETTINGS): FORCE
	@mkdir -p $(@D)
	@echo '$(SHIP_METHOD) $(TRAIN_ARGS) $(DATA_DIR) $(XCEPTION_WEIGHTS)' | cmp -s - $@ \
		|| echo '$(SHIP_METHOD) $(TRAIN_ARGS) $(DATA_DIR) $(XCEPTION_WEIGHTS)' > $@

# A failed conversion (an int8 model rejected, say) dates the model back so the next
# `make run` converts again instead of taking it as done.
$(MODEL): $(CONVERT_INPUTS) | setup data
	$(BIN)/python -m convert $(CONVERT_FLAGS) \
		|| { touch -c -t 197001010000 $@; exit 1; }

test: test-pytest $(EXTRA_TESTS) ## every test suite (pytest, TensorFlow and the dataset included)

test-pytest: | setup data
	$(PYTEST)

test-fast: | setup data ## the edit loop: pytest -m "not slow", fewer fuzz examples
	HYPOTHESIS_PROFILE=dev $(PYTEST) -m "not slow"

bench-smoke: | setup data ## the benchmark scripts' smoke tests (pytest -m bench)
	$(PYTEST) -m bench

test-torch: | setup setup-torch data ## the PyTorch tests, in .venv-torch (Keras reference: $(VENV))
	KERAS_PYTHON=$(abspath $(BIN))/python $(TORCH_BIN)/python -m pytest tests_torch

train-torch: | setup-torch data ## train with PyTorch, same recipe (docs/pytorch.md) -> artifacts/torch/
	$(TORCH_BIN)/python -m torch_training train $(TRAIN_ARGS)

export-torch: | setup-torch data ## its best run -> verified ONNX + int8 + serve.onnx in artifacts/torch/model/
	$(TORCH_BIN)/python -m torch_training export --int8

lint: | setup ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The deployment linters live in their own venv: aws-sam-cli pins boto3 apart from `dev`.
lint-deploy: | setup-deploy ## sam validate --lint, cfn-lint, hadolint
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(DEPLOY_BIN)/sam validate --lint
	$(DEPLOY_BIN)/cfn-lint template.yaml
	$(DEPLOY_BIN)/hadolint Dockerfile

check: lint lint-deploy test ## everything CI runs: lint + lint-deploy + test

bench-parity: | setup data ## preprocessing vs Keras, per mode and size
	$(BIN)/python -m bench.preprocessing_parity

bench-convert: | setup data ## convert the real model: parity, size, accuracy, latency per variant
	$(BIN)/python -m bench.convert_real

bench-serve: | setup ## cold start and warm latency of the serving path at 299
	$(BIN)/python -m bench.serve_latency

bench-soak: | setup ## 5,000 good and hostile requests in one process + parallel clients
	$(BIN)/python -m bench.soak

bench-runtimes: | setup data ## Keras, LiteRT, onnxruntime side by side (needs bench-convert)
	$(BIN)/python -m bench.runtimes

bench-backfill: | setup data ## photos/s per vCPU on the backfill path, 1 vs N per invoke; cost
	$(BIN)/python -m bench.backfill_throughput

# e.g. make backfill URI=s3://my-shop-catalogue/catalogue/ STACK=fashion-classifier BACKFILL_ARGS=--dry-run
backfill: | setup ## classify every photo under URI with the deployed STACK's backfill (docs/upload.md)
	$(BIN)/python -m lambda_function.backfill $(URI) $(if $(STACK),--stack $(STACK)) $(BACKFILL_ARGS)

bench-memory: | setup ## peak memory per worst image and per batch at MemorySize 1024 (docs/results/)
	$(BIN)/python -m bench.memory

# Not in CI: CPU-heavy. A seeded sample of mutants, at most 14 minutes a run (run it again
# to go on); the score is in docs/security.md.
MUTANTS ?= 150
mutation: | setup ## mutation testing of lambda_function/ (mutmut, MUTANTS=150 sampled)
	$(BIN)/python scripts/mutation.py --sample $(MUTANTS)

setup: $(VENV)/.installed ## the venv: the locked dev set (requirements/dev.txt) + the project

# A venv whose pip does not run, or on another Python than $(PYTHON), is made anew.
$(VENV)/.installed: requirements/dev.txt pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "make: no working python3.12 or python3; set PYTHON=" >&2; exit 1; }
	@echo "make: $(VENV) on $(PYTHON) ($$($(PYTHON) -V 2>&1))"
	@want=$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])'); \
	have=$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])' 2>/dev/null); \
	if [ "$$have" != "$$want" ] || ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
		$(PYTHON) -m venv --clear $(VENV); fi
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $@

setup-deploy: $(DEPLOY_VENV)/.installed

$(DEPLOY_VENV)/.installed: pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "make: no working python3.12 or python3; set PYTHON=" >&2; exit 1; }
	$(DEPLOY_BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(DEPLOY_VENV)
	$(DEPLOY_BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(DEPLOY_BIN)/python -m pip install --quiet --group deploy-lint
	touch $@

setup-torch: $(TORCH_VENV)/.installed

# pip, not uv: pip's configured find-links hold the CPU wheel. Elsewhere, point TORCH_INDEX
# at PyTorch's CPU index (https://download.pytorch.org/whl/cpu) to get the CPU build.
TORCH_INDEX ?=
$(TORCH_VENV)/.installed: pyproject.toml
	@[ -n "$(TORCH_PYTHON)" ] || { echo "make: no working python3.11; set TORCH_PYTHON=" >&2; exit 1; }
	$(TORCH_BIN)/python -m pip --version >/dev/null 2>&1 || $(TORCH_PYTHON) -m venv --clear $(TORCH_VENV)
	$(TORCH_BIN)/python -m pip install --quiet --upgrade pip
	$(TORCH_BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		--editable ".[torch-test]"
	touch $@

# requirements/dev.txt: the `dev` group with the convert and bench extras, hash-pinned for
# every platform, by a pinned uv in a venv of its own.
lock: ## regenerate requirements/dev.txt from pyproject.toml
	$(LOCK_VENV)/bin/uv --version 2>/dev/null | grep -qF '$(UV_VERSION)' \
		|| { $(PYTHON) -m venv --clear $(LOCK_VENV) \
		&& $(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra convert --extra bench --group dev \
		--constraint requirements/constraints.txt \
		--universal --python-version 3.11 --generate-hashes --quiet \
		--custom-compile-command "make lock" -o requirements/dev.txt

data: $(DATA_DIR)/train

$(DATA_DIR)/train:
	git clone --depth 1 $(DATASET_URL) $(DATA_DIR)

clean: ## remove artifacts/ and the tool caches (not the venvs)
	rm -rf artifacts .pytest_cache .ruff_cache .mypy_cache
