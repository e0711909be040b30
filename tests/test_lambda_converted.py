"""The handler serving a model made by ``python -m convert`` from a Keras checkpoint.

A small functional Keras model (Xception's kinds of layers) is saved as ``.h5``,
converted by the project's own converter, and served: the handler's scores must be
Keras' softmax on the same photo, and the labels, size and version must come from the
metadata the converter wrote.
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
from tests.lambda_testing import LABELS, FakeContext, assert_prediction, send, serving

pytestmark = pytest.mark.slow

SIZE = 71
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keras_model():  # type: ignore[no-untyped-def]
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="input")
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.SeparableConv2D(8, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(len(LABELS), name="logits")(x))


@pytest.fixture(scope="module")
def photos(data_dir: Path) -> list[Path]:
    return [sorted((data_dir / "test" / label).glob("*.jpg"))[0] for label in LABELS[:4]]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_model, photos) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    from convert.cli import main

    root = tmp_path_factory.mktemp("converted")
    checkpoint = root / "small.h5"
    keras_model.save(checkpoint)
    (root / "photos").mkdir()
    for photo in photos:
        (root / "photos" / photo.name).write_bytes(photo.read_bytes())
    output = root / "model" / "model.onnx"
    argv = [str(checkpoint), "-o", str(output), "--labels", ",".join(LABELS)]
    assert main([*argv, "--images", str(root / "photos")]) == 0
    return checkpoint, output


@pytest.fixture
def serve(converted, function_env) -> None:  # type: ignore[no-untyped-def]
    function_env(MODEL_PATH=converted[1], ALLOW_LOOPBACK_FOR_TESTS=1)


def keras_probabilities(model, photo: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    logits = model.predict(preprocess(photo.read_bytes(), SIZE), verbose=0)[0].astype(np.float64)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def test_the_handler_answers_what_keras_answers(serve, keras_model, photos, converted) -> None:  # type: ignore[no-untyped-def]
    with serving({f"/{p.name}": send(p.read_bytes()) for p in photos}) as server:
        for photo in photos:
            answer = handler.lambda_handler({"url": server.url(f"/{photo.name}")}, FakeContext())
            assert_prediction(answer, LABELS, SIZE)
            expected = keras_probabilities(keras_model, photo)
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


def test_the_cli_classifies_photos_with_the_converted_model(converted, keras_model, photos) -> None:  # type: ignore[no-untyped-def]
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
        LABELS[int(np.argmax(keras_probabilities(keras_model, p)))] for p in photos
    ]
