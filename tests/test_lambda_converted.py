"""The handler serving the model `python -m convert` made from a shipped Keras checkpoint.

The shared tiny pipeline (tests/pipeline_fixture.py) ships ``ft-block13-swa`` (the real
base at 71 px, fine-tuned) and converts it: the handler's scores must be the saved Keras
model's softmax at the calibrated temperature on the same photo, and the labels, size and
version must come from the metadata the converter wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lambda_function import handler
from lambda_function.preprocessing import preprocess
from tests.lambda_testing import FakeContext, assert_prediction, send, serving
from tests.pipeline_fixture import LABELS, SHIPPED, SIZE, Pipeline

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def converted(tiny_pipeline: Pipeline) -> tuple[Path, Path]:
    """(the shipped .h5, its fp32 ONNX conversion)."""
    training = tiny_pipeline.shipped[SHIPPED]
    run = json.loads((training / "manifest.json").read_text())["runs"][0]
    return training / run["best_checkpoint"], tiny_pipeline.model


@pytest.fixture(scope="module")
def keras_model(converted):  # type: ignore[no-untyped-def]
    import keras

    return keras.models.load_model(converted[0], compile=False)


@pytest.fixture(scope="module")
def temperature(tiny_pipeline: Pipeline) -> float:
    manifest = json.loads((tiny_pipeline.shipped[SHIPPED] / "manifest.json").read_text())
    return float(manifest["runs"][0]["calibration"]["temperature"])


@pytest.fixture(scope="module")
def photos(tiny_pipeline: Pipeline) -> list[Path]:
    return [sorted((tiny_pipeline.data / "test" / label).glob("*.jpg"))[0] for label in LABELS]


@pytest.fixture
def serve(converted, function_env) -> None:  # type: ignore[no-untyped-def]
    function_env(MODEL_PATH=converted[1], ALLOW_LOOPBACK_FOR_TESTS=1)


def keras_probabilities(model, photo: Path, temperature: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    logits = model.predict(preprocess(photo.read_bytes(), SIZE), verbose=0)[0].astype(np.float64)
    logits = logits / temperature
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def test_the_handler_answers_what_keras_answers(
    serve, keras_model, photos, converted, temperature
) -> None:  # type: ignore[no-untyped-def]
    with serving({f"/{p.name}": send(p.read_bytes()) for p in photos}) as server:
        for photo in photos:
            answer = handler.lambda_handler({"url": server.url(f"/{photo.name}")}, FakeContext())
            assert_prediction(answer, LABELS, SIZE)
            expected = keras_probabilities(keras_model, photo, temperature)
            np.testing.assert_allclose(list(answer["scores"].values()), expected, atol=1e-5)
            assert answer["category"] == LABELS[int(np.argmax(expected))]
    sha = hashlib.sha256(converted[0].read_bytes()).hexdigest()
    assert answer["model"]["version"] == sha[:12]


def test_an_api_gateway_upload_is_served_by_the_converted_model(serve, photos) -> None:  # type: ignore[no-untyped-def]
    event = json.loads((REPO / "events" / "http-api-upload.json").read_text())
    event["body"] = base64.b64encode(photos[0].read_bytes()).decode()
    response = handler.lambda_handler(event, FakeContext())
    assert response["statusCode"] == 200
    assert_prediction(json.loads(response["body"]), LABELS, SIZE)


def test_the_cli_classifies_photos_with_the_converted_model(
    converted, keras_model, photos, temperature
) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "lambda_function", *map(str, photos), "--model", str(converted[1])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(result.stdout)["results"]
    assert [r["category"] for r in results] == [
        LABELS[int(np.argmax(keras_probabilities(keras_model, p, temperature)))] for p in photos
    ]
