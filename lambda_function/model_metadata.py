"""The contract a model carries inside its ONNX ``metadata_props``.

``convert`` writes it, the Lambda function reads it: labels, input size and the
preprocessing travel with the model, so nothing downstream hard-codes them. Every
value is a string (ONNX metadata is a string map); lists and maps are JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEMA = "fashion-classifier/1"
PREPROCESSING = "xception"  # x / 127.5 - 1, see lambda_function.preprocessing.scale
RESIZE = "nearest"
LAYOUT = "NHWC"
OUTPUT = "logits"

_REQUIRED = ("schema", "labels", "image_size", "layout", "preprocessing", "resize", "output")


class ModelMetadataError(ValueError):
    """The model does not carry the metadata this service needs."""


@dataclass(frozen=True)
class ModelMetadata:
    """What a model promises about its input and output."""

    labels: tuple[str, ...]
    image_size: int
    checkpoint_sha256: str = ""
    val_accuracy: float | None = None
    created_at: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    layout: str = LAYOUT
    preprocessing: str = PREPROCESSING
    resize: str = RESIZE
    output: str = OUTPUT
    # Calibration, fitted on out-of-fold predictions by `python -m training cv`. The
    # defaults (no scaling, never `confident`) keep models converted before it loading.
    temperature: float = 1.0  # probabilities are softmax(logits / temperature)
    confidence_threshold: float | None = None  # top probability at which `confident`
    # Out of catalogue: an output of each photo's distance to the training photos' classes
    # (pooled features, Mahalanobis), and the distance above which the photo is probably
    # none of the labels; fitted out of fold by `python -m training cv`. "" / None: none.
    catalogue_output: str = ""
    catalogue_cut: float | None = None

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ModelMetadataError(
                f"Expected at least two distinct labels. Received: {list(self.labels)}"
            )
        if not 1 <= self.image_size <= 2048:
            raise ModelMetadataError(
                f"Expected an image size between 1 and 2048. Received: {self.image_size}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ModelMetadataError(
                f"Expected a finite temperature > 0. Received: temperature={self.temperature!r}"
            )
        threshold = self.confidence_threshold
        if threshold is not None and not 0 <= threshold <= 1:
            raise ModelMetadataError(
                "Expected a confidence threshold in [0, 1] (or none). "
                f"Received: confidence_threshold={threshold!r}"
            )
        if bool(self.catalogue_output) != (self.catalogue_cut is not None) or not (
            self.catalogue_cut is None
            or (math.isfinite(self.catalogue_cut) and self.catalogue_cut > 0)
        ):
            raise ModelMetadataError(
                "Expected both a catalogue output and a finite cut > 0, or neither. Received: "
                f"catalogue_output={self.catalogue_output!r}, catalogue_cut={self.catalogue_cut!r}"
            )
        if self.catalogue_output == self.output:
            raise ModelMetadataError(
                f"Expected the catalogue output to differ from the logits {self.output!r}. "
                f"Received: catalogue_output={self.catalogue_output!r}"
            )
        expected = {
            "layout": LAYOUT,
            "preprocessing": PREPROCESSING,
            "resize": RESIZE,
            "output": OUTPUT,
        }
        for name, value in expected.items():
            if getattr(self, name) != value:
                raise ModelMetadataError(
                    f"Expected {name}={value!r}, which this service implements. "
                    f"Received: {name}={getattr(self, name)!r}"
                )

    @property
    def version(self) -> str:
        """A short, stable model version: the checkpoint's sha256 prefix."""
        return self.checkpoint_sha256[:12]

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` string map to store in the ONNX model."""
        return {
            "schema": SCHEMA,
            "labels": json.dumps(list(self.labels)),
            "image_size": str(self.image_size),
            "layout": self.layout,
            "preprocessing": self.preprocessing,
            "resize": self.resize,
            "output": self.output,
            "checkpoint_sha256": self.checkpoint_sha256,
            "val_accuracy": "" if self.val_accuracy is None else repr(self.val_accuracy),
            "created_at": self.created_at,
            "versions": json.dumps(dict(self.versions), sort_keys=True),
            "temperature": repr(self.temperature),
            "confidence_threshold": (
                "" if self.confidence_threshold is None else repr(self.confidence_threshold)
            ),
            "catalogue_output": self.catalogue_output,
            "catalogue_cut": "" if self.catalogue_cut is None else repr(self.catalogue_cut),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ModelMetadata:
        """Read and validate the map written by :meth:`to_props`."""
        missing = [key for key in _REQUIRED if not props.get(key)]
        if missing:
            raise ModelMetadataError(
                f"Expected ONNX metadata {', '.join(_REQUIRED)} (written by `python -m "
                f"convert`). Missing: {', '.join(missing)}"
            )
        if props["schema"] != SCHEMA:
            raise ModelMetadataError(
                f"Expected metadata schema {SCHEMA!r}. Received: {props['schema']!r}"
            )
        try:
            labels = json.loads(props["labels"])
            image_size = int(props["image_size"])
            versions = json.loads(props.get("versions") or "{}")
            val_accuracy = float(props["val_accuracy"]) if props.get("val_accuracy") else None
            temperature = float(props.get("temperature") or 1.0)
            threshold = props.get("confidence_threshold")
            confidence_threshold = float(threshold) if threshold else None
            cut = props.get("catalogue_cut")
            catalogue_cut = float(cut) if cut else None
        except ValueError as exc:
            raise ModelMetadataError(f"Malformed ONNX metadata: {exc}") from exc
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ModelMetadataError(
                f"Expected labels as a JSON list of strings. Received: {props['labels']!r}"
            )
        return cls(
            labels=tuple(labels),
            image_size=image_size,
            checkpoint_sha256=props.get("checkpoint_sha256", ""),
            val_accuracy=val_accuracy,
            created_at=props.get("created_at", ""),
            versions=versions,
            layout=props["layout"],
            preprocessing=props["preprocessing"],
            resize=props["resize"],
            output=props["output"],
            temperature=temperature,
            confidence_threshold=confidence_threshold,
            catalogue_output=props.get("catalogue_output", ""),
            catalogue_cut=catalogue_cut,
        )
