"""onnxruntime as the service runs it: one session, its contract, logits in batches.

The session is :func:`lambda_function.model.open_session`'s, with the thread count the
service would choose on this machine, so what conversion verifies and times is what
serving runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from convert.to_onnx import INPUT_NAME
from lambda_function import model, preprocessing
from lambda_function.config import default_threads
from lambda_function.model_metadata import OUTPUT, ModelMetadata

T = TypeVar("T")
BATCH_SIZE = 8
"""Photos per Keras or onnxruntime call. Throughput on a CPU is the same at 8 as at 32, and
the activations of 8 photos at 299 px take a quarter of the memory (onnxruntime keeps its
largest batch's buffers for the life of the session)."""


def open_session(path: Path) -> Any:
    """An onnxruntime session configured as the Lambda configures it (errors-only logs)."""
    return model.open_session(path, intra_op_threads=default_threads(os.environ), quiet=True)


def session_metadata(session: Any) -> ModelMetadata:
    """The contract stored in the model, read the way the serving package reads it."""
    return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)


def onnx_logits(
    session: Any, x: np.ndarray, batch_size: int = BATCH_SIZE, *, scale: bool = False
) -> np.ndarray:
    """onnxruntime's float32 logits for ``x``, in batches.

    ``scale``: ``x`` is uint8 pixels, scaled batch by batch as serving scales them (so a
    large set is never held in float32 all at once).
    """
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if scale:
            batch = preprocessing.scale(batch)
        chunks.append(session.run([OUTPUT], {INPUT_NAME: batch})[0])
    return np.concatenate(chunks).astype(np.float32)


def progress(items: Iterable[T], label: str, total: int | None = None) -> Iterable[T]:
    """A progress bar on a terminal, nothing in a log file."""
    return tqdm(
        items, desc=f"convert: {label}", unit="photo", total=total, disable=None, leave=False
    )
