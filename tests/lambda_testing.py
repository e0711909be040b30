"""Helpers for the serving tests: tiny ONNX models, images, a loopback image server.

The tiny model is a real ONNX graph with the production signature (NHWC float32
``input`` with a dynamic batch, ``logits`` out) and the metadata ``convert`` writes. It
averages each colour channel and maps red, green and blue to the first three labels,
so a test can predict its answer: a red photo is ``labels[0]``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lambda_function.model_metadata import ModelMetadata

LABELS = (
    "dress", "hat", "longsleeve", "outwear", "pants",
    "shirt", "shoes", "shorts", "skirt", "t-shirt",
)  # fmt: skip
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)
EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


def build_model(
    path: Path,
    *,
    labels: tuple[str, ...] = LABELS,
    image_size: int = 32,
    metadata: dict[str, str] | None = None,
    checkpoint_sha256: str = "0123456789abcdef" * 4,
    weights: np.ndarray | None = None,
) -> Path:
    """Write a tiny classifier to ``path``; ``metadata`` replaces the contract's props.

    ``weights``: the (3, labels) map from mean channel to logit (default: red, green and
    blue to the first three labels, at 8 each)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if weights is None:
        weights = np.zeros((3, len(labels)), dtype=np.float32)
        for channel in range(min(3, len(labels))):
            weights[channel, channel] = 8.0
    weights = np.asarray(weights, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        ],
        "tiny",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", image_size, image_size, 3]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(labels)])],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.zeros(len(labels), dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is None:
        metadata = ModelMetadata(
            labels=labels, image_size=image_size, checkpoint_sha256=checkpoint_sha256
        ).to_props()
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def image_bytes(color: tuple[int, int, int] = RED, size: tuple[int, int] = (64, 48)) -> bytes:
    """A plain JPEG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class FakeContext:
    """The parts of the Lambda context object the handler reads."""

    remaining_ms: int = 20_000
    aws_request_id: str = "test-request-id"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text())


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    """The JSON payload of an API Gateway response."""
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def assert_prediction(answer: dict[str, Any], labels: tuple[str, ...], image_size: int) -> None:
    """``answer`` has the documented shape: best category, softmax scores over every label,
    the three most probable categories and the ``confident`` flag."""
    assert set(answer) >= {
        "category",
        "probability",
        "scores",
        "top3",
        "confident",
        "out_of_catalogue",
        "model",
    }
    assert list(answer["scores"]) == list(labels)
    assert answer["category"] in labels
    assert answer["probability"] == max(answer["scores"].values())
    assert answer["scores"][answer["category"]] == answer["probability"]
    assert all(0.0 <= p <= 1.0 for p in answer["scores"].values())
    assert abs(sum(answer["scores"].values()) - 1.0) < 1e-4
    ranked = sorted(answer["scores"].items(), key=lambda kv: -kv[1])[:3]
    assert [(t["category"], t["probability"]) for t in answer["top3"]] == ranked
    assert isinstance(answer["confident"], bool)
    assert isinstance(answer["out_of_catalogue"], bool)
    assert not (answer["confident"] and answer["out_of_catalogue"])
    assert answer["model"]["image_size"] == image_size
    assert isinstance(answer["model"]["version"], str) and answer["model"]["version"]


def assert_error(answer: dict[str, Any], code: str) -> None:
    assert set(answer) >= {"error", "request_id"}
    assert answer["error"]["code"] == code, answer
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    assert "Traceback" not in answer["error"]["message"]


Route = Callable[[BaseHTTPRequestHandler], None]


class ImageServer(ThreadingHTTPServer):
    """A loopback HTTP server whose paths are test-defined routes; counts connections.

    ``host`` may be any 127.0.0.x: a second listener there stands for an internal
    service that must never be reached."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _RouteHandler)
        self.routes = routes
        self.connections = 0
        self.hosts: list[str] = []

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the fetcher hangs up on purpose (a body over the cap, a deadline)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or str(self.server_address[0])}:{self.port}{path}"


class _RouteHandler(BaseHTTPRequestHandler):
    server: ImageServer

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(routes: dict[str, Route], host: str = "127.0.0.1") -> Iterator[ImageServer]:
    server = ImageServer(routes, host)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def send(
    body: bytes, *, status: int = 200, content_type: str = "image/jpeg", **headers: str
) -> Route:
    """A route answering ``body`` with a correct Content-Length unless ``headers`` say else."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        extra = {k.replace("_", "-"): v for k, v in headers.items()}
        if "Content-Length" not in extra:
            handler.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route
