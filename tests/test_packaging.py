"""The dependency groups do what pyproject.toml promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "h5py", "matplotlib"}


def resolve(extra: str) -> set[str]:
    """What the lock installs for ``extra`` alone (as ``pip install .[extra]`` would): the
    names in the dev group's uv's export of it, offline."""
    uv = Path(sys.executable).parent / "uv"
    done = subprocess.run(
        [str(uv), "export", "--locked", "--offline", "--quiet", "--no-dev", "--no-emit-project",
         "--no-hashes", "--no-annotate", "--no-header", "--extra", extra],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return {line.split("==")[0].lower() for line in done.stdout.splitlines() if "==" in line}


def test_serve_group_never_pulls_tensorflow() -> None:
    resolved = resolve("serve")
    assert {"numpy", "pillow", "onnxruntime"} <= resolved
    assert not TRAINING_ONLY & resolved, resolved


def test_the_convert_extra_pulls_serving_and_training_alike() -> None:
    # Extras that name other extras (convert -> train -> serve) keep their whole closure.
    assert {"numpy", "pillow", "onnxruntime", "tensorflow", "keras", "tf2onnx"} <= resolve(
        "convert"
    )


def test_preprocessing_imports_without_tensorflow() -> None:
    code = (
        "import sys, lambda_function.preprocessing, lambda_function.model_metadata\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'keras', 'tf2onnx', 'onnx'})\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_onnxruntime_loads_what_this_onnx_writes(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert model.ir_version == onnx.IR_VERSION
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)})
    assert y.tolist() == [[0.0, 0.0, 2.0]]
