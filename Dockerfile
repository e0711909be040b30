# The Lambda container image: the serving package, its model, and the `serve` extra only.
# Build from the repository root after `make run` (or `python -m convert`) has written
# artifacts/model/model.onnx:
#   docker build -t fashion-classifier .                           # x86_64
#   docker build --platform linux/arm64 -t fashion-classifier .    # Graviton
# `sam build` does the same, for the Architectures set in template.yaml.
FROM public.ecr.aws/lambda/python:3.12

# The pins live in one place, pyproject.toml: install its `serve` extra and nothing else
# (boto3 and the runtime interface client come with the base image).
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['optional-dependencies']['serve']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY lambda_function/ ${LAMBDA_TASK_ROOT}/lambda_function/
COPY artifacts/model/model.int8.onnx ${LAMBDA_TASK_ROOT}/lambda_function/model.onnx

CMD ["lambda_function.lambda_handler"]
