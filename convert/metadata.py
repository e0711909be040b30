"""Write the model's contract (:class:`ModelMetadata`) into its ONNX ``metadata_props``.

The one writer of ONNX metadata in the project: the converted model, and every variant
derived from it, get their ``metadata_props`` here. TensorFlow-free (``onnx`` only).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from convert.catalogue import OUTPUT as CATALOGUE_OUTPUT
from convert.checkpoint import LoadedCheckpoint
from lambda_function.model_metadata import ModelMetadata

if TYPE_CHECKING:
    import onnx

LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")


def library_versions(opset: int, libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The versions of the libraries that made the model, and its opset."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = _tensorflow_cpu_version() if name == "tensorflow" else "unknown"
    versions["opset"] = str(opset)
    return versions


def make_metadata(
    checkpoint: LoadedCheckpoint,
    opset: int,
    created_at: datetime | None = None,
    libraries: tuple[str, ...] = LIBRARIES,
) -> ModelMetadata:
    """The contract of a model converted from ``checkpoint`` by ``libraries``."""
    when = (created_at or datetime.now(UTC)).isoformat(timespec="seconds")
    return ModelMetadata(
        labels=checkpoint.labels,
        image_size=checkpoint.image_size,
        checkpoint_sha256=checkpoint.sha256,
        val_accuracy=checkpoint.val_accuracy,
        created_at=when,
        versions=library_versions(opset, libraries),
        temperature=checkpoint.temperature,
        confidence_threshold=checkpoint.confidence_threshold,
        catalogue_output=CATALOGUE_OUTPUT if checkpoint.catalogue else "",
        catalogue_cut=checkpoint.catalogue_cut if checkpoint.catalogue else None,
    )


def attach_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Store ``metadata`` in ``proto.metadata_props``, replacing keys already there."""
    set_props(proto, metadata.to_props())


def file_opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset the graph was written with (what the exporter really chose)."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def set_props(proto: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set ``props`` in ``proto.metadata_props``; other keys already there are kept."""
    import onnx

    kept = {p.key: p.value for p in proto.metadata_props if p.key not in props}
    onnx.helper.set_model_props(proto, {**kept, **props})


def copy_metadata(source: Path, target: Path) -> None:
    """Give the ONNX model at ``target`` exactly the ``metadata_props`` of ``source``."""
    import onnx

    props = {
        p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props
    }
    proto = onnx.load(str(target))
    if {p.key: p.value for p in proto.metadata_props} == props:
        return
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(target))


def _tensorflow_cpu_version() -> str:
    try:
        return importlib_metadata.version("tensorflow-cpu")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
