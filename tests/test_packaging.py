"""The dependency groups do what pyproject.toml promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "h5py", "matplotlib"}


def resolve(extra: str, tmp_path: Path) -> dict[str, str]:
    """What ``pip install .[extra]`` would install on a machine that has nothing."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--quiet", "--report", str(report), f".[{extra}]"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


@pytest.mark.slow  # asks the package index
def test_serve_group_never_pulls_tensorflow(tmp_path: Path) -> None:
    resolved = resolve("serve", tmp_path)
    assert {"numpy", "pillow", "onnxruntime"} <= resolved.keys()
    assert not TRAINING_ONLY & resolved.keys(), resolved


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
