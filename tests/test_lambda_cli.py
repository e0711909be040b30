"""``python -m lambda_function PATH_OR_URL...``: the handler's answers, printed as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_function.cli import main
from tests.lambda_testing import BLUE, LABELS, RED, build_model, image_bytes, send, serving

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def model(tmp_path: Path, function_env) -> Path:  # type: ignore[no-untyped-def]
    function_env(MODEL_PATH="", MODEL_S3_URI="")  # so that what --model sets is undone afterwards
    return build_model(tmp_path / "model.onnx")


def test_files_and_urls_are_classified_in_order(model, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLOW_LOOPBACK_FOR_TESTS", "1")
    photo = tmp_path / "red.jpg"
    photo.write_bytes(image_bytes(RED))
    with serving({"/blue.jpg": send(image_bytes(BLUE))}) as server:
        code = main([str(photo), server.url("/blue.jpg"), "--model", str(model)])
    results = json.loads(capsys.readouterr().out)["results"]
    assert code == 0
    assert [r["input"] for r in results] == [str(photo), server.url("/blue.jpg")]
    assert [r["category"] for r in results] == [LABELS[0], LABELS[2]]


def test_one_input_prints_one_answer_and_a_failure_exits_1(model, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    assert main([str(text), "--model", str(model)]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert (answer["status"], answer["error"]["code"]) == (415, "unsupported_image")


def test_log_prints_each_request_line_to_stderr_and_keeps_stdout_the_answer(
    model, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "red.jpg"
    photo.write_bytes(image_bytes(RED))
    assert main([str(photo), "--model", str(model), "--log"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["category"] == LABELS[0]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (request,) = [line for line in lines if "request_id" in line]
    assert (request["status"], request["input"]) == (200, "image")


def test_a_missing_model_says_how_to_make_one() -> None:
    env = {**os.environ, "MODEL_PATH": "/nonexistent/model.onnx", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "lambda_function", "photo.jpg"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "no model at /nonexistent/model.onnx" in result.stderr
    assert "make run" in result.stderr and "python -m convert" in result.stderr


def test_a_missing_file_is_a_usage_error(model, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["/nonexistent/photo.jpg", "--model", str(model)]) == 2
    assert "photo.jpg" in capsys.readouterr().err
