"""Out of catalogue: the distance on pooled features, its cut, the graph output, the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert.catalogue import OUTPUT, PREFIX, add_distance
from convert.errors import ConvertError
from lambda_function.model import Classifier
from lambda_function.model_metadata import ModelMetadata, ModelMetadataError
from tests.lambda_testing import BLUE, GREEN, LABELS, RED, assert_prediction
from training.catalogue import Catalogue, cut, out_of_fold_distances

SIZE = 8
ORANGE = (250, 120, 10)
COLOURS = {"dress": RED, "hat": GREEN, "longsleeve": BLUE}


def brute_force(catalogue_x: np.ndarray, y: np.ndarray, x: np.ndarray, shrink: float) -> np.ndarray:
    """Mahalanobis distances the slow, obvious way."""
    classes = np.unique(y)
    means = np.stack([catalogue_x[y == c].mean(axis=0) for c in classes])
    centred = catalogue_x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(centred)
    cov += shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov)
    d = [[(v - m) @ precision @ (v - m) for m in means] for v in x]
    return np.min(d, axis=1)


def blobs(n: int = 60, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(n, d)) + 4 * np.eye(d)[y], y


def test_the_distance_is_the_smallest_mahalanobis_distance_to_a_class_mean() -> None:
    x, y = blobs()
    probe = np.random.default_rng(1).normal(size=(7, 5)) * 3
    catalogue = Catalogue.fit(x, y, shrink=0.1)
    np.testing.assert_allclose(catalogue.distances(probe), brute_force(x, y, probe, 0.1))


def test_a_photo_far_from_every_class_is_farther_than_the_class_photos() -> None:
    x, y = blobs()
    catalogue = Catalogue.fit(x, y)
    assert catalogue.distances(np.full((1, 5), 12.0))[0] > catalogue.distances(x).max()


def test_out_of_fold_distances_measure_each_fold_against_the_others() -> None:
    x, y = blobs()
    fold = np.arange(len(y)) % 4
    oof = out_of_fold_distances(x, y, fold)
    for i in range(4):
        rows = fold == i
        expected = Catalogue.fit(x[~rows], y[~rows]).distances(x[rows])
        np.testing.assert_allclose(oof[rows], expected)
    # A photo measured by Gaussians that saw it looks closer than it is.
    assert np.mean(oof) > np.mean(Catalogue.fit(x, y).distances(x))


def test_the_cut_flags_the_false_reject_share_of_in_catalogue_photos() -> None:
    distances = np.arange(1.0, 101.0)
    assert np.mean(distances > cut(distances, 0.05)) == pytest.approx(0.05, abs=0.01)
    with pytest.raises(ValueError, match="Expected a false-reject rate in"):
        cut(distances, 1.5)
    with pytest.raises(ValueError, match=r"Expected \(N, D\) features"):
        Catalogue.fit(np.zeros((4, 2)), np.zeros(4, dtype=int))


def test_a_saved_catalogue_loads_back(tmp_path: Path) -> None:
    x, y = blobs()
    catalogue = Catalogue.fit(x, y)
    loaded = Catalogue.load(catalogue.save(tmp_path / "catalogue.npz"))
    np.testing.assert_allclose(loaded.distances(x), catalogue.distances(x), rtol=1e-4)


def pooled_model(path: Path, catalogue: Catalogue | None, cut_value: float | None) -> Path:
    """A tiny NHWC model that pools like Xception's export: Transpose, GlobalAveragePool,
    Flatten, MatMul; its pooled features are the scaled mean of each colour channel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, len(LABELS)), dtype=np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 8.0
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("GlobalAveragePool", ["nchw"], ["pool"]),
            helper.make_node("Flatten", ["pool"], ["pooled"], axis=1),
            helper.make_node("MatMul", ["pooled", "weights"], ["logits"]),
        ],
        "pooled",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(LABELS)])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if catalogue is not None:
        add_distance(model, catalogue)
    metadata = ModelMetadata(
        labels=LABELS,
        image_size=SIZE,
        checkpoint_sha256="cd" * 32,
        confidence_threshold=0.5,
        catalogue_output=OUTPUT if catalogue is not None else "",
        catalogue_cut=cut_value,
    )
    helper.set_model_props(model, metadata.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def scaled(colour: tuple[int, int, int]) -> np.ndarray:
    return np.array(colour, dtype=np.float64) / 127.5 - 1


def colour_catalogue() -> Catalogue:
    """Gaussians of the three colours' pooled features, a little noise around each."""
    rng = np.random.default_rng(0)
    labels = list(COLOURS)
    x = np.concatenate([scaled(c) + rng.normal(0, 0.05, (20, 3)) for c in COLOURS.values()])
    y = np.repeat(np.arange(len(labels)), 20)
    return Catalogue.fit(x, y)


def batch(*colours: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.broadcast_to(scaled(c), (SIZE, SIZE, 3)) for c in colours]).astype(
        np.float32
    )


def test_the_graph_computes_the_distance_of_its_own_pooled_features(tmp_path: Path) -> None:
    catalogue = colour_catalogue()
    model = Classifier.load(pooled_model(tmp_path / "m.onnx", catalogue, 50.0))
    colours = (RED, GREEN, BLUE, (128, 128, 128), (250, 250, 10))
    _, distances = model.predict_with_distances(batch(*colours))
    assert distances is not None
    expected = catalogue.distances(np.stack([scaled(c) for c in colours]))
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-3)


def test_a_photo_beyond_the_cut_is_out_of_catalogue_and_never_confident(tmp_path: Path) -> None:
    catalogue = colour_catalogue()
    inside = catalogue.distances(np.stack([scaled(c) for c in COLOURS.values()])).max()
    model = Classifier.load(pooled_model(tmp_path / "m.onnx", catalogue, float(inside) * 2))
    probabilities, distances = model.predict_with_distances(batch(RED, ORANGE))
    assert distances is not None
    red, orange = (
        model.describe(p, float(d)) for p, d in zip(probabilities, distances, strict=True)
    )
    for answer in (red, orange):
        assert_prediction(answer, LABELS, SIZE)
    assert red["category"] == "dress" and red["confident"] and not red["out_of_catalogue"]
    # Orange is mostly red: the head is sure it is a dress, the distance is not.
    assert orange["category"] == "dress" and orange["probability"] > 0.9
    assert orange["out_of_catalogue"] is True and orange["confident"] is False


def test_a_model_without_the_distance_never_says_out_of_catalogue(tmp_path: Path) -> None:
    model = Classifier.load(pooled_model(tmp_path / "m.onnx", None, None))
    probabilities, distances = model.predict_with_distances(batch((250, 250, 10)))
    assert distances is None
    assert model.describe(probabilities[0])["out_of_catalogue"] is False


def test_the_distance_needs_exactly_one_pooling_node() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "none",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    with pytest.raises(ConvertError, match="Expected one GlobalAveragePool"):
        add_distance(helper.make_model(graph), colour_catalogue())


@pytest.mark.parametrize(
    "fields",
    [
        {"catalogue_output": OUTPUT},
        {"catalogue_cut": 3.0},
        {"catalogue_output": OUTPUT, "catalogue_cut": float("inf")},
        {"catalogue_output": OUTPUT, "catalogue_cut": -1.0},
        {"catalogue_output": "logits", "catalogue_cut": 3.0},
    ],
)
def test_metadata_refuses_half_a_catalogue(fields: dict) -> None:
    with pytest.raises(ModelMetadataError, match="catalogue"):
        ModelMetadata(labels=LABELS, image_size=SIZE, **fields)


def test_metadata_carries_the_catalogue_both_ways() -> None:
    metadata = ModelMetadata(
        labels=LABELS, image_size=SIZE, catalogue_output=OUTPUT, catalogue_cut=12.5
    )
    back = ModelMetadata.from_props(metadata.to_props())
    assert (back.catalogue_output, back.catalogue_cut) == (OUTPUT, 12.5)


def test_int8_quantisation_leaves_the_distance_in_float(tmp_path: Path) -> None:
    import onnx

    from convert.images import Photo
    from convert.quantize import quantize_int8
    from tests.lambda_testing import image_bytes

    catalogue = colour_catalogue()
    source = pooled_model(tmp_path / "m.onnx", catalogue, 50.0)
    photos = []
    for name, colour in COLOURS.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(image_bytes(colour))
        photos.append(Photo(path, list(COLOURS).index(name)))
    target = tmp_path / "m.int8.onnx"
    quantize_int8(source, target, photos, SIZE)
    graph = onnx.load(str(target)).graph
    names = {n.name for n in graph.node if n.name.startswith(PREFIX)}
    assert f"{PREFIX}whitened" in names
    quantized_inputs = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    whitened = next(n for n in graph.node if n.name == f"{PREFIX}whitened")
    assert whitened.input[1] not in quantized_inputs  # the factor stays a float initialiser
    _, fp32 = Classifier.load(source).predict_with_distances(batch(RED, (128, 128, 128)))
    _, int8 = Classifier.load(target).predict_with_distances(batch(RED, (128, 128, 128)))
    assert fp32 is not None and int8 is not None
    np.testing.assert_allclose(int8, fp32, rtol=0.1, atol=2.0)
