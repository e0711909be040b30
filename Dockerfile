# The Lambda container image: the serving package, the served model, the serve lock only.
# Build from the repository root once `make run` (or `python -m convert`) has written
# artifacts/model/serve.onnx, the one model every conversion leaves to be served:
#   docker build -t fashion-classifier .                           # x86_64
#   docker build --platform linux/arm64 -t fashion-classifier .    # Graviton
# `sam build` does the same, for the Architectures set in template.yaml.
FROM public.ecr.aws/lambda/python:3.12

# The complete serve closure, every wheel pinned by hash (exported from uv.lock by
# `make lock`). Only the lock is copied first, so this layer stays cached until the
# lock itself changes (boto3 and the runtime interface client come with the base image).
COPY requirements/serve.txt /tmp/serve.txt
RUN pip install --no-cache-dir --only-binary=:all: --require-hashes -r /tmp/serve.txt \
    && rm /tmp/serve.txt

COPY lambda_function/ ${LAMBDA_TASK_ROOT}/lambda_function/
COPY artifacts/model/serve.onnx ${LAMBDA_TASK_ROOT}/lambda_function/serve.onnx
# The model's known-answer set (written with serve.onnx): the pre-traffic hook replays it.
COPY artifacts/model/known/ ${LAMBDA_TASK_ROOT}/lambda_function/known/
# /var/task is read-only at run time: compile the bytecode now, not at every cold start.
RUN python3 -m compileall -q "${LAMBDA_TASK_ROOT}/lambda_function"

CMD ["lambda_function.lambda_handler"]
