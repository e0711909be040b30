"""The command line: clear errors for bad settings, and what the extras install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests_torch.conftest import REPO
from torch_training.cli import main
from torch_training.device import pick_device


def test_cuda_without_a_gpu_is_a_clear_error(tiny_data, xception_weights, capsys) -> None:
    if torch.cuda.is_available():
        pytest.fail("this test expects the CPU build of torch (.venv-torch)")
    argv = ["train", "--data-dir", str(tiny_data), "--weights", str(xception_weights)]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "Expected a CUDA GPU for --device cuda" in capsys.readouterr().err
    assert pick_device("auto") == torch.device("cpu")


def test_missing_weights_name_the_setting(tiny_data, capsys, monkeypatch) -> None:
    monkeypatch.delenv("XCEPTION_WEIGHTS", raising=False)
    assert main(["train", "--data-dir", str(tiny_data), "--epochs", "1"]) == 2
    assert "Expected --weights or XCEPTION_WEIGHTS" in capsys.readouterr().err


def resolve(extra: str, tmp_path: Path) -> dict[str, str]:
    """What ``pip install .[extra]`` would install into this (Python 3.11) venv from nothing."""
    report = tmp_path / f"{extra}.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--quiet", "--report", str(report), f".[{extra}]"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_the_torch_extra_is_the_cpu_build_and_serve_has_no_torch(tmp_path) -> None:
    torch_extra = resolve("torch", tmp_path)
    assert torch_extra["torch"] == "2.13.0+cpu"
    assert not [n for n in torch_extra if n.startswith(("nvidia", "triton", "cuda"))]
    assert not {"tensorflow", "keras"} & torch_extra.keys()
    assert "torch" not in resolve("serve", tmp_path)
