"""The catalogue distance as a second output of the ONNX graph.

The distance (``training.catalogue``) is computed from the pooled base features, which
only the graph has: the nodes added here read the output of its one
``GlobalAveragePool`` (what Keras' and PyTorch's average pooling both export to) and
write ``catalogue_distance``, one value per photo. With ``P = L Lᵀ`` and ``g = f L``::

    d_c = |g|² - 2 g·(μ_c L) + |μ_c L|²,   distance = min_c d_c

Two MatMuls and a few element-wise nodes: a small cost beside the base. The nodes are
named with :data:`PREFIX` so that int8 quantisation leaves them in float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from convert.errors import ConvertError

if TYPE_CHECKING:
    import onnx

    from training.catalogue import Catalogue

OUTPUT = "catalogue_distance"
PREFIX = "catalogue/"


def add_distance(proto: onnx.ModelProto, catalogue: Catalogue) -> onnx.ModelProto:
    """``proto`` with the ``catalogue_distance`` output (N,) added, in place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    pools = [node for node in graph.node if node.op_type == "GlobalAveragePool"]
    if len(pools) != 1:
        raise ConvertError(
            "Expected one GlobalAveragePool (the pooled base features) to measure the "
            f"catalogue distance on. Received: {len(pools)}"
        )
    width = catalogue.factor.shape[0]
    m = catalogue.means @ catalogue.factor
    constants = {
        "factor": catalogue.factor.astype(np.float32),
        "means_t": m.T.astype(np.float32),
        "means_sq": (m * m).sum(axis=1, keepdims=True).T.astype(np.float32),
        "minus_two": np.array(-2.0, dtype=np.float32),
    }
    for name, value in constants.items():
        graph.initializer.append(numpy_helper.from_array(value, PREFIX + name))

    def node(op: str, inputs: list[str], name: str, out: str = "", **attrs: Any) -> str:
        out = out or PREFIX + name
        graph.node.append(helper.make_node(op, inputs, [out], name=PREFIX + name, **attrs))
        return out

    c = {name: PREFIX + name for name in constants}
    pooled = node("Flatten", [pools[0].output[0]], "pooled", axis=1)
    g = node("MatMul", [pooled, c["factor"]], "whitened")
    squared = node("ReduceSumSquare", [g], "squared", axes=[1], keepdims=1)
    cross = node("Mul", [node("MatMul", [g, c["means_t"]], "cross"), c["minus_two"]], "cross2")
    d = node("Add", [node("Add", [squared, cross], "partial"), c["means_sq"]], "to_means")
    node("ReduceMin", [d], "distance", out=OUTPUT, axes=[1], keepdims=0)
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch"]))
    _check_width(proto, pools[0].output[0], width)
    return proto


def _check_width(proto: onnx.ModelProto, pooled: str, width: int) -> None:
    """The pooled features must be as wide as the catalogue's Gaussians."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    for info in inferred.graph.value_info:
        if info.name == pooled:
            dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
            if len(dims) >= 2 and dims[1] not in (0, width):
                raise ConvertError(
                    f"Expected pooled features of width {width} (the catalogue's). "
                    f"Received: {dims[1]}"
                )
