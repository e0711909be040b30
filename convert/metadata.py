"""Write the model's contract (:class:`ModelMetadata`) into its ONNX ``metadata_props``."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from convert.checkpoint import Checkpoint
from lambda_function.model_metadata import ModelMetadata

if TYPE_CHECKING:
    import onnx

LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")


def library_versions(opset: int) -> dict[str, str]:
    """The versions of the libraries that made the model, and its opset."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = _tensorflow_cpu_version() if name == "tensorflow" else "unknown"
    versions["opset"] = str(opset)
    return versions


def make_metadata(
    checkpoint: Checkpoint, opset: int, created_at: datetime | None = None
) -> ModelMetadata:
    """The contract of a model converted from ``checkpoint``."""
    if checkpoint.image_size is None:
        raise ValueError(f"{checkpoint.path}: load the model first to learn its image size")
    when = (created_at or datetime.now(UTC)).isoformat(timespec="seconds")
    return ModelMetadata(
        labels=checkpoint.labels,
        image_size=checkpoint.image_size,
        checkpoint_sha256=checkpoint.sha256,
        val_accuracy=checkpoint.val_accuracy,
        created_at=when,
        versions=library_versions(opset),
    )


def attach_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Store ``metadata`` in ``proto.metadata_props``, replacing keys already there."""
    props = metadata.to_props()
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: Path) -> ModelMetadata:
    """Read and validate the contract of the ONNX model at ``path`` (as serving does)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})


def _tensorflow_cpu_version() -> str:
    try:
        return importlib_metadata.version("tensorflow-cpu")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
