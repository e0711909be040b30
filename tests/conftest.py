"""Shared fixtures: the dataset and the ImageNet base weights (from ``tests/datasets.py``),
a tiny model, the function's environment, and the Hypothesis profiles."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.datasets import data_dir, xception_weights
from tests.lambda_testing import BLUE, GREEN, RED, build_model, image_bytes, send, serving

__all__ = ["data_dir", "xception_weights"]  # shared with tests_torch (tests/datasets.py)

pytest_plugins = ("tests.pipeline_fixture",)  # the shared tiny pipeline: `tiny_pipeline`

# Fuzz tests: `ci` by default; `dev` (make test-fast) for the edit loop; `long` for a long run.
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=50)
settings.register_profile("long", settings.get_profile("ci"), max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px ONNX model with the test labels (``tests.lambda_testing.build_model``)."""
    return build_model(tmp_path_factory.mktemp("model") / "model.onnx", image_size=32)


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set the function's environment variables (``None`` removes one); the next request
    builds the service from them. Undone, and the service dropped, after the test."""
    from lambda_function import handler

    def apply(**env: object) -> None:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        handler.get_service.cache_clear()

    yield apply
    handler.get_service.cache_clear()


@pytest.fixture
def images() -> Iterator[Any]:
    """A loopback server with red, green and blue photos, a text file and a slow image."""

    def slow(request_handler: Any) -> None:
        time.sleep(1.5)
        send(image_bytes())(request_handler)

    routes = {
        "/red.jpg": send(image_bytes(RED)),
        "/green.jpg": send(image_bytes(GREEN)),
        "/blue.jpg": send(image_bytes(BLUE)),
        "/notes.txt": send(b"not an image", content_type="text/plain"),
        "/slow.jpg": slow,
    }
    with serving(routes) as server:
        yield server
