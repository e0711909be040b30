# The few commands a user types. `make run` does the main job, `make test` the tests;
# both set up the virtualenv (and fetch the dataset) first when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/clothing-dataset-small
XCEPTION_WEIGHTS ?= imagenet
DATASET_URL := https://github.com/alexeygrigorev/clothing-dataset-small
export DATA_DIR XCEPTION_WEIGHTS

DEPLOY_VENV ?= .venv-deploy
DEPLOY_BIN := $(DEPLOY_VENV)/bin
# One photo of a few classes from the test split: what `make classify` shows by default.
SAMPLES ?= $(foreach c,pants shoes dress t-shirt,$(firstword $(sort $(wildcard $(DATA_DIR)/test/$(c)/*.jpg))))
IMAGES ?= $(SAMPLES)

.PHONY: run train convert classify test lint lint-deploy setup setup-deploy data clean \
	bench-parity bench-train bench-convert bench-serve bench-soak bench-runtimes

# The main job, end to end: train the 299 px model, convert it to a verified ONNX model,
# then classify sample photos of the test split through the Lambda handler.
run: train convert classify

# Train the shipped model (299 px; TRAIN_ARGS adds options, see `python -m training train
# --help`): best .h5 + manifest.json in artifacts/training/, features cached in artifacts/cache/.
train: setup data
	$(BIN)/python -m training train $(TRAIN_ARGS)

# The training benchmark: 150 px sweep, an augmented run, the final 299 px model (~20 min).
bench-train: setup data
	$(BIN)/python bench/train_bench.py

test: setup data lint
	$(BIN)/python -m pytest

lint: setup lint-deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The deployment linters live in their own venv: aws-sam-cli pins boto3 apart from `dev`.
lint-deploy: setup-deploy
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(DEPLOY_BIN)/sam validate --lint
	$(DEPLOY_BIN)/cfn-lint template.yaml
	$(DEPLOY_BIN)/hadolint Dockerfile

# Classify photos through the Lambda handler (IMAGES: files or URLs), printing its JSON.
classify: setup
	$(BIN)/python -m lambda_function $(IMAGES)

# Cold start and warm latency of the serving path at 299; figures in artifacts/bench/.
bench-serve: setup
	$(BIN)/python bench/serve_latency.py

# 5,000 good and hostile requests in one process + parallel clients; artifacts/bench/soak.*
bench-soak: setup
	$(BIN)/python bench/soak.py

# The best run of artifacts/training -> artifacts/model/model.onnx, verified against Keras on
# every validation photo (+ report.json), and model.int8.onnx, kept only within 1 point of
# fp32's accuracy: the model the image ships (docs/performance.md).
# CONVERT_FLAGS="--optimize --int8" adds the optimised graph.
CONVERT_FLAGS ?= --int8
convert: setup data
	$(BIN)/python -m convert artifacts/training -o artifacts/model/model.onnx $(CONVERT_FLAGS)

# Convert the real model; parity, sizes, accuracy and latency per variant in artifacts/bench/.
bench-convert: setup data
	$(BIN)/python bench/convert_real.py

# Keras, LiteRT and onnxruntime (fp32, optimised, int8) side by side on the best run, plus
# the machine's matmul peak, session options and preprocessing (~2 min; needs bench-convert).
bench-runtimes: setup data
	$(BIN)/python bench/runtimes.py

setup: $(VENV)/.installed

# A venv whose pip does not run (missing, or an interrupted install) is made anew.
$(VENV)/.installed: pyproject.toml
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable ".[dev]"
	touch $@

setup-deploy: $(DEPLOY_VENV)/.installed

$(DEPLOY_VENV)/.installed: pyproject.toml
	$(DEPLOY_BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(DEPLOY_VENV)
	$(DEPLOY_BIN)/pip install --quiet --upgrade pip
	$(DEPLOY_BIN)/pip install --quiet $$($(PYTHON) -c "import tomllib; \
	  print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['deploy-lint']))")
	touch $@

data: $(DATA_DIR)/train

$(DATA_DIR)/train:
	git clone --depth 1 $(DATASET_URL) $(DATA_DIR)

bench-parity: setup data
	$(BIN)/python bench/preprocessing_parity.py

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
