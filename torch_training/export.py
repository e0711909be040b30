"""A PyTorch checkpoint to the ONNX model the Lambda serves, through ``convert``'s pipeline.

This module is only the PyTorch half of :mod:`convert.source`: the exporter and the
reference. Everything else is :func:`convert.pipeline.run`, as for Keras: the
metadata (with the run's calibration), verification on every validation photo (in
batches and along the serving path), atomic placement, the int8 variant, ``serve.onnx``
and ``report.json``.

The graph itself comes from :mod:`torch_training.to_onnx`.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from convert.checkpoint import find_checkpoint
from convert.errors import ConvertError
from convert.pipeline import Options
from convert.source import Source
from convert.verify import serving_inputs
from torch_training.model import Classifier, ServedModel
from torch_training.to_onnx import export_graph
from torch_training.train import load_checkpoint

LIBRARIES = ("torch", "onnx", "onnxruntime")


def torch_source(options: Options) -> Source:
    """The run ``options`` name in a ``torch_training`` output folder, ready to convert.

    The reference is the model's own logits on serving's pixels: it never saw
    ``load_img``'s, so both checks compare the same inputs.
    """
    checkpoint = find_checkpoint(options.source, labels=options.labels, run=options.run)
    clock = time.perf_counter()
    try:
        model, saved = load_checkpoint(checkpoint.path)
    except ValueError as exc:
        raise ConvertError(str(exc)) from exc
    if tuple(saved["labels"]) != checkpoint.labels or saved["image_size"] != (
        checkpoint.image_size
    ):
        raise ConvertError(
            f"{checkpoint.path}: expected the labels and size its manifest records "
            f"({list(checkpoint.labels)}, {checkpoint.image_size}). Received: "
            f"{saved['labels']}, {saved['image_size']}"
        )
    size = int(saved["image_size"])
    return Source(
        checkpoint=checkpoint.loaded(size),
        export=partial(export_graph, model, size),
        reference=partial(torch_logits, model),
        framework="PyTorch",
        inputs=serving_inputs,
        libraries=LIBRARIES,
        load_s=time.perf_counter() - clock,
    )


def torch_logits(model: Classifier, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """PyTorch logits for NHWC inputs ``x`` (eval mode, no gradients)."""
    served = ServedModel(model).eval()
    with torch.inference_mode():
        chunks = [
            served(torch.from_numpy(x[i : i + batch_size])).numpy()
            for i in range(0, len(x), batch_size)
        ]
    return np.concatenate(chunks).astype(np.float32)
