"""The container's path without Docker: the real runtime client, and nothing of TensorFlow.

``python -m awslambdaric lambda_function.lambda_handler`` is what the base image runs
for ``CMD ["lambda_function.lambda_handler"]``. Here it talks to a stand-in for the
Lambda Runtime API on loopback, which hands it events and records its answers.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.lambda_testing import GREEN, LABELS, b64, image_bytes, load_event

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/2018-06-01/runtime"


class RuntimeApi(ThreadingHTTPServer):
    """Hands out ``events`` one by one on ``/invocation/next``; collects what comes back."""

    daemon_threads = True

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.pending: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        for number, event in enumerate(events):
            self.pending.put((f"request-{number}", event))
        self.posted: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/invocation/next":
            self._answer(404, b"{}")
            return
        request_id, event = self.server.pending.get()  # blocks once the events run out
        self._answer(
            200,
            json.dumps(event).encode(),
            {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                "Lambda-Runtime-Invoked-Function-Arn": (
                    "arn:aws:lambda:us-east-1:123456789012:function:fashion-classifier"
                ),
            },
        )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = self.path.removeprefix(PREFIX).strip("/")
        self.server.posted.put((kind, json.loads(body or b"{}")))
        self._answer(202, b'{"status": "OK"}')

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Container:
    """One ``python -m awslambdaric`` process, as the image's CMD starts it, and its output."""

    api: RuntimeApi
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    loaded: threading.Event = field(default_factory=threading.Event)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def answer(self, events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Hand ``events`` to the function once its init is over; what it posts back."""
        assert self.loaded.wait(60), self.output
        for number, event in enumerate(events):
            self.api.pending.put((f"request-{number}", event))
        return [self.api.posted.get(timeout=60) for _ in events]


@contextmanager
def container(env: dict[str, str]) -> Iterator[Container]:
    api = RuntimeApi([])  # no event until the init is over: the model must load at init
    threading.Thread(target=api.serve_forever, args=(0.05,), daemon=True).start()
    process = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "lambda_function.lambda_handler"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
            "PYTHONPATH": str(REPO),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Container(api, process)

    def read_output() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            running.lines.append(line)
            if '"model_loaded"' in line:
                running.loaded.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        yield running
    finally:
        process.kill()
        process.wait()
        api.shutdown()
        api.server_close()


def test_the_runtime_client_runs_the_handler_like_the_container(tiny_model: Path) -> None:
    """The model loads at init, before the first event; then events are answered."""
    events = [{"image": b64(image_bytes(GREEN))}, load_event("http-api-upload.json")]
    with container({"MODEL_PATH": str(tiny_model)}) as function:
        answers = function.answer(events)
    (kind_direct, direct), (kind_api, via_api) = answers
    assert kind_direct == "invocation/request-0/response", function.output
    assert direct["category"] == LABELS[1]
    assert set(direct["scores"]) == set(LABELS)
    assert kind_api == "invocation/request-1/response", function.output
    assert via_api["statusCode"] == 200
    assert json.loads(via_api["body"])["model"]["image_size"] == 32


@pytest.mark.parametrize("log_format", ["JSON", "Text"])
def test_the_request_line_is_one_json_object_in_either_log_format(
    tiny_model: Path, log_format: str
) -> None:
    """What Lambda ships to CloudWatch: the request line must be a JSON object on its own
    line (not a string inside another record) for the EMF metrics to be read."""
    env = {"MODEL_PATH": str(tiny_model), "AWS_LAMBDA_LOG_FORMAT": log_format}
    env["AWS_LAMBDA_FUNCTION_NAME"] = "fashion-predict"
    with container(env) as function:
        ((kind, answer),) = function.answer([{"image": b64(image_bytes(GREEN))}])
    assert kind == "invocation/request-0/response" and answer["category"] == LABELS[1]
    (line,) = [json.loads(text) for text in function.lines if '"request_id"' in text]
    assert (line["request_id"], line["status"], line["Function"]) == (
        "request-0",
        200,
        "fashion-predict",
    )
    assert line["_aws"]["CloudWatchMetrics"] and line["Requests"] == 1


@pytest.mark.parametrize(
    ("setting", "error", "reason"),
    [
        ({"ORT_INTRA_OP_THREADS": "abc"}, "ValueError", "ORT_INTRA_OP_THREADS"),
        ({"MODEL_PATH": "/nonexistent/serve.onnx"}, "ModelUnavailableError", "No model at"),
    ],
)
@pytest.mark.parametrize("log_format", ["JSON", "Text"])
def test_a_model_that_cannot_load_fails_the_init(
    tiny_model: Path, setting: dict[str, str], error: str, reason: str, log_format: str
) -> None:
    """Lambda is told (``/runtime/init/error``: it counts the error and retries the init on
    the next request), and the log says why, in the line that carries ``InitFailures``."""
    env = {"MODEL_PATH": str(tiny_model), "AWS_LAMBDA_LOG_FORMAT": log_format, **setting}
    with container(env) as function:
        kind, body = function.api.posted.get(timeout=60)
        assert function.process.wait(timeout=60) != 0
    assert kind == "init/error", function.output
    assert body["errorType"] == error and reason in body["errorMessage"]
    (line,) = [json.loads(text) for text in function.lines if '"init_failed"' in text]
    assert line["InitFailures"] == 1 and reason in line["reason"]
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "InitFailures", "Unit": "Count"}
    ]
    assert not function.loaded.is_set()


def test_the_serving_package_imports_nothing_from_tensorflow(tiny_model: Path) -> None:
    """Import every serving module and answer a request, in a fresh interpreter."""
    script = """
import base64, io, json, sys
from PIL import Image
import lambda_function
import lambda_function.cli, lambda_function.config, lambda_function.errors
import lambda_function.events, lambda_function.fetch, lambda_function.model
import lambda_function.handler, lambda_function.preprocessing, lambda_function.service
import lambda_function.deploy_check
buffer = io.BytesIO()
Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "JPEG")
event = {"image": base64.b64encode(buffer.getvalue()).decode()}
answer = lambda_function.lambda_handler(event, None)
assert "category" in answer, answer
heavy = ("tensorflow", "keras", "tf2onnx", "onnx", "training", "convert", "jax", "torch")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    env = {**os.environ, "MODEL_PATH": str(tiny_model), "PYTHONPATH": str(REPO)}
    env.pop("AWS_LAMBDA_RUNTIME_API", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_an_upload_event_sent_to_the_predict_function_is_answered_not_raised(
    tiny_model: Path,
) -> None:
    """Raised, it would reach Lambda as an unhandled error with a stack trace of source
    paths, and count in the function's Errors metric (its alarm) whenever anyone sent one."""
    events: list[dict[str, Any]] = [
        {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}}]},
        {"Items": [{"Key": "catalogue/a.jpg"}], "BatchInput": {"bucket": "b"}},
    ]
    with container({"MODEL_PATH": str(tiny_model)}) as function:
        answers = function.answer(events)
    for number, (kind, answer) in enumerate(answers):
        assert kind == f"invocation/request-{number}/response", function.output
        assert (answer["status"], answer["error"]["code"]) == (400, "wrong_function")
        assert "UploadFunctionName" in answer["error"]["message"]
    assert ".py" not in json.dumps(answers) and "Traceback" not in function.output
    lines = [json.loads(text) for text in function.lines if '"request_id"' in text]
    assert [(line["request_id"], line["code"]) for line in lines] == [
        ("request-0", "wrong_function"),
        ("request-1", "wrong_function"),
    ]
