"""The catalogue distance end to end: shipped by ``training cv --ship``, converted into the
ONNX graph, answered by the service (the shared tiny pipeline's ``today`` run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline_fixture import SIZE, Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tiny_pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convert.cli import main as convert

    model = tmp_path_factory.mktemp("today") / "model.onnx"
    folder = tiny_pipeline.shipped["today"]
    assert convert([str(folder), "-o", str(model), "--data-dir", str(tiny_pipeline.data)]) == 0
    return model


def test_a_shipped_head_only_run_records_its_catalogue(tiny_pipeline: Pipeline) -> None:
    folder = tiny_pipeline.shipped["today"]
    manifest = json.loads((folder / "manifest.json").read_text())
    (run,) = [r for r in manifest["runs"] if r["name"] == manifest["best_run"]]
    record = run["calibration"]["catalogue"]
    assert (folder / record["file"]).is_file() and record["cut"] > 0
    assert record["false_reject"] == 0.02
    # The fine-tuned recipe's pooled features are its own: it ships without one.
    tuned = json.loads((tiny_pipeline.shipped["ft-block13-swa"] / "manifest.json").read_text())
    assert all("catalogue" not in r.get("calibration", {}) for r in tuned["runs"])


def test_the_served_distance_is_the_catalogues_on_the_base_features(
    tiny_pipeline: Pipeline, converted: Path
) -> None:
    from lambda_function import preprocessing
    from lambda_function.model import Classifier
    from training import data
    from training.catalogue import Catalogue
    from training.features import labelled_features

    folder = tiny_pipeline.shipped["today"]
    manifest = json.loads((folder / "manifest.json").read_text())
    (run,) = [r for r in manifest["runs"] if r["name"] == manifest["best_run"]]
    catalogue = Catalogue.load(folder / run["calibration"]["catalogue"]["file"])
    dataset = data.scan(tiny_pipeline.data)
    features, _ = labelled_features(dataset, SIZE, tiny_pipeline.weights, tiny_pipeline.cache)
    files = [f for split in dataset.splits for f in dataset[split].files]
    x = np.stack([preprocessing.scale(data.decode_file(f, SIZE)) for f in files[:6]])
    model = Classifier.load(converted)
    assert model.metadata.catalogue_cut == run["calibration"]["catalogue"]["cut"]
    probabilities, distances = model.predict_with_distances(x.astype(np.float32))
    assert distances is not None
    np.testing.assert_allclose(distances, catalogue.distances(features[:6]), rtol=2e-3)
    # 36 photos cannot place a cut that means much in 2,048 dimensions; the answer must
    # still follow it, photo by photo.
    cut = model.metadata.catalogue_cut
    assert cut is not None
    for p, d in zip(probabilities, distances, strict=True):
        answer = model.describe(p, float(d))
        assert answer["out_of_catalogue"] is bool(d > cut)
        assert not (answer["confident"] and answer["out_of_catalogue"])
    answer = model.describe(probabilities[0], cut * 2)
    assert answer["out_of_catalogue"] is True and answer["confident"] is False
