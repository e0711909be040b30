"""The answer the listing form uses: calibrated probabilities, ``top3`` and ``confident``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lambda_function.model import Classifier, softmax
from lambda_function.model_metadata import ModelMetadata
from tests.lambda_testing import BLUE, GREEN, LABELS, RED, assert_prediction, build_model

SIZE = 16


def red_input() -> np.ndarray:
    x = np.empty((1, SIZE, SIZE, 3), dtype=np.float32)
    x[...] = np.array(RED, dtype=np.float32) / 127.5 - 1
    return x


def classifier(tmp_path: Path, **calibration: float | None) -> Classifier:
    props = ModelMetadata(
        labels=LABELS, image_size=SIZE, checkpoint_sha256="ab" * 32, **calibration
    ).to_props()
    return Classifier.load(build_model(tmp_path / "model.onnx", image_size=SIZE, metadata=props))


def test_the_temperature_in_the_metadata_scales_the_logits(tmp_path: Path) -> None:
    plain = classifier(tmp_path / "plain").predict(red_input())
    cooled = classifier(tmp_path / "t4", temperature=4.0).predict(red_input())
    # The tiny model's logits are 8 x the mean of each scaled colour channel.
    logits = np.zeros(len(LABELS))
    logits[:3] = 8 * (np.array(RED) / 127.5 - 1)
    np.testing.assert_allclose(plain[0], softmax(logits), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cooled[0], softmax(logits, 4.0), rtol=1e-4, atol=1e-6)
    assert cooled[0].argmax() == plain[0].argmax() == 0
    assert cooled[0, 0] < 0.5 < 0.98 < plain[0, 0]


def test_top3_lists_the_three_most_probable_categories_in_order(tmp_path: Path) -> None:
    model = classifier(tmp_path, temperature=2.0, confidence_threshold=0.9)
    answer = model.describe(np.array([0.05, 0.5, 0.02, 0.3, 0.03, 0.04, 0.01, 0.02, 0.02, 0.01]))
    assert answer["top3"] == [
        {"category": "hat", "probability": 0.5},
        {"category": "outwear", "probability": 0.3},
        {"category": "dress", "probability": 0.05},
    ]
    assert answer["category"] == "hat" and answer["probability"] == 0.5
    assert answer["confident"] is False


@pytest.mark.parametrize(
    "threshold, top, confident",
    [(0.9, 0.9, True), (0.9, 0.95, True), (0.9, 0.899, False), (None, 0.999, False)],
)
def test_confident_is_the_top_probability_against_the_stored_threshold(
    tmp_path: Path, threshold: float | None, top: float, confident: bool
) -> None:
    model = classifier(tmp_path, confidence_threshold=threshold)
    rest = (1 - top) / (len(LABELS) - 1)
    probabilities = np.full(len(LABELS), rest)
    probabilities[4] = top
    assert model.describe(probabilities)["confident"] is confident


def test_a_calibrated_answer_keeps_the_existing_fields(tmp_path: Path) -> None:
    model = classifier(tmp_path, temperature=1.5, confidence_threshold=0.6)
    for colour, label in ((RED, "dress"), (GREEN, "hat"), (BLUE, "longsleeve")):
        x = np.broadcast_to(np.array(colour, np.float32) / 127.5 - 1, (1, SIZE, SIZE, 3))
        answer = model.describe(model.predict(np.ascontiguousarray(x))[0])
        assert_prediction(answer, LABELS, SIZE)
        assert answer["category"] == label
        assert answer["confident"] is (answer["probability"] >= 0.6)
