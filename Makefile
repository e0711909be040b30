# The few commands a user types: `make run` does the main job, `make test` runs the tests.
# `make help` lists every target. The venv and the dataset are set up on first use.

.DEFAULT_GOAL := help

# uv makes every venv from the one lock, uv.lock (`make lock`), on the Python that
# .python-version names (3.12, the Lambda runtime's; uv fetches it where none is installed).
# uv itself is pinned as in the `dev` group and bootstrapped once into .venv-uv; `make UV=uv`
# uses one already installed (pyproject.toml's required-version says which).
UV_VERSION := 0.13.9
ifeq ($(origin UV),undefined)
UV := .venv-uv/bin/uv
UV_BOOTSTRAP := $(UV)
endif
VENV := .venv
BIN := $(VENV)/bin
TORCH_VENV := .venv-torch
TORCH_BIN := $(TORCH_VENV)/bin
# The deployment linters run from the lock's `deploy-lint` group, in an environment of their
# own: aws-sam-cli pins boto3 apart from `dev`.
DEPLOY_RUN := UV_PROJECT_ENVIRONMENT=.venv-deploy $(UV) run --locked --only-group deploy-lint --quiet

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
	check setup lock data clean FORCE \
	bench-parity bench-convert bench-serve bench-soak \
	backfill bench-backfill bench-memory mutation \
	setup-torch test-torch train-torch export-torch

help: ## list the targets
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

lint-deploy: | $(UV_BOOTSTRAP) ## sam validate --lint, cfn-lint, hadolint (the deploy-lint group)
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(DEPLOY_RUN) sam validate --lint
	$(DEPLOY_RUN) cfn-lint template.yaml
	$(DEPLOY_RUN) hadolint Dockerfile

check: lint lint-deploy test ## everything CI runs: lint + lint-deploy + test

bench-parity: | setup data ## preprocessing vs Keras, per mode and size
	$(BIN)/python -m bench.preprocessing_parity

bench-convert: | setup data ## convert the real model: parity, size, accuracy, latency per variant
	$(BIN)/python -m bench.convert_real

bench-serve: | setup ## cold start and warm latency of the serving path at 299
	$(BIN)/python -m bench.serve_latency

bench-soak: | setup ## 5,000 good and hostile requests in one process + parallel clients
	$(BIN)/python -m bench.soak

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

# uv keeps the venv exactly the lock's `dev` group + the convert extra + the project
# (editable), and does nothing when it already is.
setup: | $(UV_BOOTSTRAP) ## the venv: uv.lock's dev group and convert extra, and the project
	$(UV) sync --locked --extra convert --quiet

ifdef UV_BOOTSTRAP
$(UV_BOOTSTRAP):
	python3 -m venv --clear .venv-uv
	.venv-uv/bin/python -m pip install --quiet uv==$(UV_VERSION)
endif

setup-torch: $(TORCH_VENV)/.installed

# The PyTorch trainer has a venv of its own, on Python 3.11, made by pip: PyPI's
# torch==2.13.0 for Linux is the multi-GB CUDA build (that is the one uv.lock records), so
# its CPU build comes from where pip is pointed: set TORCH_INDEX to PyTorch's CPU index
# (https://download.pytorch.org/whl/cpu), or give pip a find-links folder that holds the
# wheel. Everything else is pinned by the lock (exported as constraints: the CPU build
# needs none of the CUDA packages, so pip installs none).
TORCH_INDEX ?=
$(TORCH_VENV)/.installed: uv.lock pyproject.toml | $(UV_BOOTSTRAP)
	$(UV) venv --quiet --allow-existing --seed --python 3.11 $(TORCH_VENV)
	$(UV) export --locked --extra torch-test --no-dev --no-emit-project --no-hashes --quiet \
		-o $(TORCH_VENV)/constraints.txt
	$(TORCH_BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		--constraint $(TORCH_VENV)/constraints.txt --editable ".[torch-test]"
	touch $@

# uv.lock: every extra and group of pyproject.toml, for every platform; the image's
# requirements/serve.txt is exported from it.
lock: | $(UV_BOOTSTRAP) ## regenerate uv.lock and requirements/serve.txt from pyproject.toml
	$(UV) lock --quiet
	$(UV) export --locked --extra serve --no-dev --no-emit-project --quiet -o requirements/serve.txt

data: $(DATA_DIR)/train

$(DATA_DIR)/train:
	git clone --depth 1 $(DATASET_URL) $(DATA_DIR)

clean: ## remove artifacts/ and the tool caches (not the venvs)
	rm -rf artifacts .pytest_cache .ruff_cache .mypy_cache
