"""What the pipeline converts, whatever framework trained it: an exporter and a reference.

:func:`convert.pipeline.run` needs four things from a framework, and nothing else: the
checkpoint's contract (labels, size, accuracy, calibration), a function that exports the
graph, a function that gives the framework's own logits on a batch (the reference the ONNX
model must match), and how that reference's inputs are built from photos. Keras builds
its source in :func:`convert.pipeline.keras_source`; PyTorch in
:func:`torch_training.export.torch_source`. TensorFlow-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convert.checkpoint import LoadedCheckpoint
from convert.images import Photo
from convert.metadata import LIBRARIES
from convert.verify import Reference, reference_inputs

if TYPE_CHECKING:
    import onnx


def _nothing() -> None:
    """Nothing to release."""


@dataclass(frozen=True)
class Source:
    """A loaded checkpoint, ready to export and to check the export against."""

    checkpoint: LoadedCheckpoint
    export: Callable[[int], onnx.ModelProto]  # opset -> the graph, without metadata
    reference: Reference  # (N, S, S, 3) float32 batch -> the framework's logits
    framework: str = "Keras"  # named in messages
    inputs: Callable[[Sequence[Photo], int], np.ndarray] = reference_inputs
    libraries: tuple[str, ...] = LIBRARIES  # whose versions the metadata records
    release: Callable[[], None] = _nothing  # frees the framework's memory after verifying
    load_s: float = 0.0
