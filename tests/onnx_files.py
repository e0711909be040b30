"""Reading what conversion wrote, for tests: the contract stored in an ONNX file."""

from __future__ import annotations

from pathlib import Path

import onnx

from lambda_function.model_metadata import ModelMetadata


def metadata_props(path: Path) -> dict[str, str]:
    """The raw ``metadata_props`` of the ONNX model at ``path``."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(path: Path) -> ModelMetadata:
    """Read and validate the contract of the ONNX model at ``path`` (as serving does)."""
    return ModelMetadata.from_props(metadata_props(path))
