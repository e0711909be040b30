"""Keras to ONNX with tf2onnx: one named NHWC input, one output named ``logits``.

Why opset 17: tf2onnx 1.17 writes opsets 13 to 18 (not 19) and onnxruntime 1.32 runs
them all. The ops this network needs (Conv, MaxPool, Relu, Add, GlobalAveragePool,
MatMul) have changed since opset 13 only by gaining data types a float32 model does not
use, so a newer opset buys nothing, and an older runtime can load an older opset. 17 is
the newest opset below tf2onnx's limit that our notes verified on Keras 3 Xception end to
end; 18 only moved the ``axes`` of the Reduce ops from attributes to inputs. Per-channel
QDQ quantisation needs at least 13.
"""

from __future__ import annotations

import copy
import gc
import logging
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lambda_function.model_metadata import OUTPUT

if TYPE_CHECKING:
    import keras
    import onnx

INPUT_NAME = "input"
BATCH_DIM = "batch"
OPSET = 17
SUPPORTED_OPSETS = range(13, 19)


def keras_to_onnx(model: keras.Model, image_size: int, opset: int = OPSET) -> onnx.ModelProto:
    """Convert ``model`` for input ``(batch, image_size, image_size, 3)`` float32."""
    import tensorflow as tf
    import tf2onnx

    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"Expected an opset between {SUPPORTED_OPSETS.start} and "
            f"{SUPPORTED_OPSETS.stop - 1} (tf2onnx 1.17). Received: opset={opset}"
        )
    tf2onnx.logging.set_level(logging.ERROR)
    signature = (tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=INPUT_NAME),)
    with _collected_graph_copies():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    rename_output(proto, OUTPUT)
    name_batch_dimension(proto, BATCH_DIM)
    return proto


@contextmanager
def _collected_graph_copies() -> Iterator[None]:
    """Free each discarded copy of the graph before tf2onnx makes the next one.

    tf2onnx's optimiser loop deep-copies the whole graph, weights included, before each of
    its optimisers. A discarded copy is a reference cycle (graph <-> nodes), freed only by a
    full garbage collection, which Python runs rarely with TensorFlow's many objects alive:
    on Xception 5 GB of copies piled up. Collecting before each copy keeps about two, and
    the graph tf2onnx returns is the same.
    """
    import tf2onnx.optimizer

    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        gc.collect()
        return copy.deepcopy(value, memo)

    module = tf2onnx.optimizer.copy
    tf2onnx.optimizer.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        yield
    finally:
        tf2onnx.optimizer.copy = module
        gc.collect()


def rename_output(proto: onnx.ModelProto, name: str) -> None:
    """Rename the graph's single output (tf2onnx names it after the last Keras layer)."""
    graph = proto.graph
    if len(graph.output) != 1:
        raise ValueError(f"Expected one graph output. Received {len(graph.output)}")
    old = graph.output[0].name
    if old == name:
        return
    for node in graph.node:
        node.output[:] = [name if out == old else out for out in node.output]
        node.input[:] = [name if inp == old else inp for inp in node.input]
    graph.output[0].name = name


def name_batch_dimension(proto: onnx.ModelProto, name: str) -> None:
    """Give the dynamic first dimension of the input and output one readable name."""
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = name
