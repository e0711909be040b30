"""The serving package: numpy, Pillow and onnxruntime only, never TensorFlow.

``lambda_function.lambda_handler`` is the container's entry point. It is resolved
lazily, so that importing the pure modules (``lambda_function.preprocessing``, used by
training too) never loads a model.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "lambda_handler":
        from lambda_function.handler import lambda_handler

        return lambda_handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
