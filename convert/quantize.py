"""The optional variants: a graph optimised offline, and an int8 model by static QDQ.

* **optimised**: onnxruntime's graph optimisations applied once and saved, at
  ``ORT_ENABLE_EXTENDED``, the highest level whose saved graph is portable
  (``ORT_ENABLE_ALL`` adds layout changes specific to the machine that saved it).
* **int8**: ``quantize_static`` in the QDQ format, activations QUInt8 and weights QInt8
  (per channel by default: a depthwise convolution's channels have very different
  ranges), MinMax ranges averaged over the photos (see :func:`quantize_int8`),
  calibrated on training photos preprocessed exactly as the Lambda does.

Dynamic quantisation is not offered: it turns each Conv into ConvInteger, which is
several times *slower* on this network (``bench/convert_real.py`` measures it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from convert.evaluate import load_pixels
from convert.images import Photo
from convert.metadata import copy_metadata
from convert.to_onnx import INPUT_NAME
from lambda_function import model, preprocessing

CALIBRATION_BATCH = 1  # photos per calibration run: ranges average per-photo extremes
MAX_ACCURACY_DROP = 0.01  # int8 is accepted within 1 point of fp32's accuracy


def save_optimized(source: Path, target: Path) -> None:
    """Save ``source`` with its graph optimised at ``ORT_ENABLE_EXTENDED``."""
    import onnxruntime as ort

    options = model.session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    copy_metadata(source, target)


def quantize_int8(
    source: Path,
    target: Path,
    calibration: Sequence[Photo],
    image_size: int,
    *,
    per_channel: bool = True,
    average_ranges: bool = True,
) -> None:
    """Write the static QDQ int8 model of ``source``, calibrated on ``calibration``.

    ``average_ranges``: each tensor's range is the mean over the photos of each photo's
    minimum and maximum, not the overall extremes. On the real model, plain MinMax let
    a few outlier activations among 200 photos stretch middle-flow ranges up to 15x, and
    accuracy fell from 0.90 to 0.55. Averaging per photo kept 99.0% of top-1 answers
    (per batch of 8 photos: 98.2%; of 32: 95.7%).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if not calibration:
        raise ValueError("Expected calibration photos. Received none")
    with tempfile.TemporaryDirectory(prefix="convert-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference (sympy) is for dynamic shapes; ours are static but batch.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _CalibrationReader(calibration, image_size),
            nodes_to_exclude=_float_nodes(prepared),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            # Not CalibMaxIntermediateOutputs: onnxruntime 1.32 discards the batches it
            # holds when that limit is reached. MinMax keeps only per-tensor min/max.
            extra_options={"CalibMovingAverage": average_ranges},
        )
    copy_metadata(source, target)


def _float_nodes(path: Path) -> list[str]:
    """Nodes that stay in float: the catalogue distance's (its squared sums need the range)."""
    import onnx

    from convert.catalogue import PREFIX

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.name.startswith(PREFIX)]


def int8_accepted(fp32_accuracy: float, int8_accuracy: float) -> bool:
    """The acceptance rule: int8 loses at most one accuracy point."""
    return fp32_accuracy - int8_accuracy <= MAX_ACCURACY_DROP + 1e-12


class _CalibrationReader:
    """Feeds ``quantize_static`` batches of preprocessed calibration photos."""

    def __init__(self, photos: Sequence[Photo], image_size: int) -> None:
        self._batches = self._iterate(list(photos), image_size)

    @staticmethod
    def _iterate(photos: list[Photo], size: int) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(photos), CALIBRATION_BATCH):
            batch = photos[i : i + CALIBRATION_BATCH]
            yield {INPUT_NAME: preprocessing.scale(load_pixels(batch, size))}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)
