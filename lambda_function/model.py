"""The ONNX model: one onnxruntime session, described by the metadata it carries."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lambda_function import files
from lambda_function.errors import ModelUnavailableError
from lambda_function.model_metadata import ModelMetadata, ModelMetadataError

MISSING_MODEL_HINT = (
    "Build one with `make run` (train, then convert) or `python -m convert`, "
    "or point MODEL_PATH (or MODEL_S3_URI) at an ONNX model."
)
TOP_K = 3


class Classifier:
    """Probabilities for batches of preprocessed images; labels and size from the metadata."""

    def __init__(self, session: Any, metadata: ModelMetadata) -> None:
        self.session = session
        self.metadata = metadata
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(
        cls, path: Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1
    ) -> Classifier:
        """Open ``path``, refusing a model whose metadata or shapes do not fit the service."""
        if not path.is_file():
            raise ModelUnavailableError(f"No model at {path}. {MISSING_MODEL_HINT}")
        try:
            session = open_session(
                path, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
            )
            metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
        except ModelMetadataError as exc:
            raise ModelUnavailableError(f"{path} cannot be served: {exc}") from exc
        except Exception as exc:
            raise ModelUnavailableError(f"{path} is not a loadable ONNX model: {exc}") from exc
        try:
            check_signature(session, metadata)
        except SignatureError as exc:
            raise ModelUnavailableError(f"{path}: {exc}") from exc
        return cls(session, metadata)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities, shape ``(N, labels)``, for a ``(N, S, S, 3)`` float32 batch.

        ``softmax(logits / temperature)``: the model's calibration (1.0 if it has none).
        """
        (logits,) = self.session.run([self.metadata.output], {self.input_name: batch})
        return softmax(np.asarray(logits, dtype=np.float64), self.metadata.temperature)

    def predict_with_distances(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and each photo's distance to the catalogue from the same run
        (``None`` for a model without that output)."""
        if not self.metadata.catalogue_output:
            return self.predict(batch), None
        names = [self.metadata.output, self.metadata.catalogue_output]
        logits, distances = self.session.run(names, {self.input_name: batch})
        probabilities = softmax(np.asarray(logits, dtype=np.float64), self.metadata.temperature)
        return probabilities, np.asarray(distances, dtype=np.float64).reshape(-1)

    def warm_up(self) -> None:
        """One inference on a blank image, so the first request does not pay for it."""
        size = self.metadata.image_size
        self.predict(np.zeros((1, size, size, 3), dtype=np.float32))

    def describe(self, probabilities: np.ndarray, distance: float | None = None) -> dict[str, Any]:
        """One image's answer in the API contract's shape.

        ``out_of_catalogue``: the photo is far from every label's training photos (its
        ``distance`` beyond the model's cut), so probably none of them; never ``confident``.
        """
        labels = self.metadata.labels
        best = int(np.argmax(probabilities))
        scores = zip(labels, probabilities.tolist(), strict=True)
        ranked = np.argsort(-probabilities, kind="stable")[:TOP_K]
        threshold = self.metadata.confidence_threshold
        cut = self.metadata.catalogue_cut
        outside = cut is not None and distance is not None and not distance <= cut
        return {
            "category": labels[best],
            "probability": round(float(probabilities[best]), 6),
            "scores": {label: round(p, 6) for label, p in scores},
            "top3": [
                {"category": labels[i], "probability": round(float(probabilities[i]), 6)}
                for i in ranked
            ],
            "confident": threshold is not None
            and bool(probabilities[best] >= threshold)
            and not outside,
            "out_of_catalogue": bool(outside),
            "model": {
                "version": self.metadata.version or "unknown",
                "image_size": self.metadata.image_size,
            },
        }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, stable for large logits."""
    scaled = logits / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class SignatureError(ValueError):
    """A model's input or output is not what its metadata and the service expect."""


def session_options(*, intra_op_threads: int = 1, inter_op_threads: int = 1) -> Any:
    """The onnxruntime settings the service runs with (conversion measures the same)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn CPU a Lambda does not have to spare between requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(
    path: Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1, quiet: bool = False
) -> Any:
    """An onnxruntime CPU session on ``path`` with :func:`session_options`.

    ``quiet``: log errors only (conversion's progress output stays readable).
    """
    import onnxruntime as ort

    options = session_options(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    if quiet:
        options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_signature(session: Any, metadata: ModelMetadata) -> None:
    """The graph's input and output must be the ones the metadata promises and serving reads.

    Raises :class:`SignatureError` saying what was expected and received.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size = metadata.image_size
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 4 or not _fits(shape[1:], [size, size, 3]):
        raise SignatureError(
            f"expected one NHWC input of shape (N, {size}, {size}, 3). "
            f"Received: {[(i.name, i.shape) for i in inputs]}"
        )
    by_name = {output.name: output for output in outputs}
    output = by_name.get(metadata.output)
    if output is None or not _fits(list(output.shape)[-1:], [len(metadata.labels)]):
        raise SignatureError(
            f"expected an output {metadata.output!r} of {len(metadata.labels)} logits. "
            f"Received: {[(o.name, o.shape) for o in outputs]}"
        )


def _fits(dims: list[Any], expected: list[int]) -> bool:
    """Static dims must match; symbolic (named or unknown) dims are accepted."""
    return len(dims) == len(expected) and all(
        not isinstance(d, int) or d == e for d, e in zip(dims, expected, strict=True)
    )


def download_model(uri: str, directory: Path | None = None) -> Path:
    """Download ``s3://bucket/key`` once per execution environment (into ``/tmp``)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise ModelUnavailableError(f"Expected MODEL_S3_URI as s3://bucket/key. Received: {uri!r}")
    directory = directory or Path(tempfile.gettempdir())
    target = directory / f"model-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.onnx"
    if target.is_file():
        return target
    import boto3

    with files.staged(target) as partial:
        try:
            boto3.client("s3").download_file(parts.netloc, parts.path.lstrip("/"), str(partial))
        except Exception as exc:
            raise ModelUnavailableError(f"Could not download {uri}: {exc}") from exc
        partial.replace(target)
    return target
