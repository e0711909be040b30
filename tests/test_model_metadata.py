"""The model contract survives the round trip through ONNX's string map, or says why not."""

from __future__ import annotations

import pytest

from lambda_function.model_metadata import ModelMetadata, ModelMetadataError

LABELS = ("dress", "hat", "longsleeve", "outwear", "pants")


def metadata(**overrides: object) -> ModelMetadata:
    fields = {
        "labels": LABELS,
        "image_size": 299,
        "checkpoint_sha256": "ab" * 32,
        "val_accuracy": 0.9032,
        "created_at": "2026-11-29T05:00:00+00:00",
        "versions": {"tensorflow": "2.21.0", "tf2onnx": "1.17.0"},
    }
    return ModelMetadata(**{**fields, **overrides})  # type: ignore[arg-type]


def test_round_trip_through_string_props() -> None:
    props = metadata().to_props()
    assert all(isinstance(value, str) for value in props.values())
    assert ModelMetadata.from_props(props) == metadata()


def test_version_is_the_checkpoint_sha_prefix() -> None:
    assert metadata().version == "ab" * 6


def test_missing_keys_are_named() -> None:
    props = metadata().to_props()
    del props["labels"], props["image_size"]
    with pytest.raises(ModelMetadataError, match="Missing: labels, image_size"):
        ModelMetadata.from_props(props)


def test_a_model_without_metadata_points_to_convert() -> None:
    with pytest.raises(ModelMetadataError, match="python -m convert"):
        ModelMetadata.from_props({})


def test_unknown_schema_is_rejected() -> None:
    props = {**metadata().to_props(), "schema": "someone-else/9"}
    with pytest.raises(ModelMetadataError, match="Received: 'someone-else/9'"):
        ModelMetadata.from_props(props)


@pytest.mark.parametrize(
    "key, value",
    [("preprocessing", "caffe"), ("resize", "bilinear"), ("layout", "NCHW"), ("output", "probs")],
)
def test_a_contract_this_service_does_not_implement_is_rejected(key: str, value: str) -> None:
    with pytest.raises(ModelMetadataError, match=f"Received: {key}='{value}'"):
        ModelMetadata.from_props({**metadata().to_props(), key: value})


@pytest.mark.parametrize("labels", ['["dress"]', '["a", "a"]', '"dress"', "[1, 2]", "not json"])
def test_bad_labels_are_rejected(labels: str) -> None:
    with pytest.raises(ModelMetadataError):
        ModelMetadata.from_props({**metadata().to_props(), "labels": labels})


@pytest.mark.parametrize("size", ["0", "4096", "big"])
def test_bad_image_size_is_rejected(size: str) -> None:
    with pytest.raises(ModelMetadataError):
        ModelMetadata.from_props({**metadata().to_props(), "image_size": size})


def test_calibration_round_trips() -> None:
    calibrated = metadata(temperature=1.375, confidence_threshold=0.8125)
    assert ModelMetadata.from_props(calibrated.to_props()) == calibrated


def test_a_model_converted_before_calibration_still_loads_uncalibrated() -> None:
    props = metadata().to_props()
    del props["temperature"], props["confidence_threshold"]
    loaded = ModelMetadata.from_props(props)
    assert loaded.temperature == 1.0
    assert loaded.confidence_threshold is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", 0.0, "Expected a finite temperature > 0. Received: temperature=0.0"),
        ("temperature", float("nan"), "Received: temperature=nan"),
        ("confidence_threshold", 1.5, "Received: confidence_threshold=1.5"),
    ],
)
def test_bad_calibration_is_rejected(field: str, value: float, message: str) -> None:
    with pytest.raises(ModelMetadataError, match=message.replace(".", r"\.")):
        metadata(**{field: value})


def test_malformed_temperature_is_a_metadata_error() -> None:
    with pytest.raises(ModelMetadataError, match="Malformed ONNX metadata"):
        ModelMetadata.from_props({**metadata().to_props(), "temperature": "warm"})
