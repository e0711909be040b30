"""``torch.onnx.export`` under the serving contract: the PyTorch exporter for ``convert``.

The export follows the contract exactly, so ``lambda_function`` serves it unchanged: one
NHWC float32 input ``input`` (dynamic batch), one output ``logits``, opset 17 (the legacy
TorchScript exporter; the dynamo exporter cannot write 17 for a graph with Pad).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convert.errors import ConvertError
from convert.to_onnx import BATCH_DIM, INPUT_NAME, OPSET
from lambda_function.model_metadata import OUTPUT as OUTPUT_NAME
from torch_training.model import Classifier, ServedModel

_FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


def export_graph(model: Classifier, image_size: int, opset: int = OPSET) -> Any:
    """``model`` as an ONNX graph for NHWC input ``(batch, size, size, 3)``.

    Refused when a constant is infinite: exact in float32, but it wrecks int8 ranges.
    """
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        to_onnx(model, image_size, path, opset)
        proto = onnx.load(str(path))
    infinite = nonfinite_constants(proto)
    if infinite:
        raise ConvertError(
            f"expected finite constants in the export (int8 calibration needs them). "
            f"Received inf/NaN in: {', '.join(infinite)}"
        )
    return proto


def to_onnx(model: Classifier, image_size: int, path: Path, opset: int = OPSET) -> None:
    """Export ``model`` for NHWC input ``(batch, size, size, 3)`` with the legacy exporter."""
    served = ServedModel(model).eval()
    quiet_export(served, torch.zeros(1, image_size, image_size, 3), path, opset)


def quiet_export(
    module: torch.nn.Module, dummy: torch.Tensor, path: Path, opset: int = OPSET
) -> None:
    """``torch.onnx.export``: legacy exporter, ``input``/``logits``, dynamic batch."""
    with warnings.catch_warnings():
        # The legacy exporter is deprecated; the pools' padding comes from the static
        # spatial size (fixed by the contract), which the tracer warns about.
        warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
        )


def nonfinite_constants(proto: Any) -> list[str]:
    """Names of initializers and constants holding inf or NaN (they wreck int8 ranges)."""
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in proto.graph.initializer]
    for node in proto.graph.node:
        tensors += [(node.output[0], a.t) for a in node.attribute if a.HasField("t")]
    return [
        name
        for name, tensor in tensors
        if tensor.data_type in _FLOAT_TYPES and not np.isfinite(numpy_helper.to_array(tensor)).all()
    ]
