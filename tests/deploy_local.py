"""Lambda ``Invoke`` and CodeDeploy ``PutLifecycleEventHookExecutionStatus`` on loopback.

moto 5 answers neither the way the pre-traffic hook needs: its Lambda ``Invoke`` runs
only zip functions in Docker (or returns canned text), and its CodeDeploy has no lifecycle
hook API. This server speaks both wire protocols as boto3 sends them (REST JSON for Lambda,
JSON 1.1 with ``X-Amz-Target`` for CodeDeploy): an invocation of a known function ARN runs
the real predict handler in this process, so the hook is tested over real HTTP against
the real serving code. Every call is recorded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from PIL import Image

from tests.aws_local import AWS_ENV

INVOKE_PREFIX = "/2015-03-31/functions/"
HOOK_TARGET = "CodeDeploy_20141006.PutLifecycleEventHookExecutionStatus"
Function = Callable[[Any], Any]


@dataclass
class Calls:
    """What the server was asked: invocations (function, payload) and hook statuses."""

    invocations: list[tuple[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)


class DeployServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, functions: dict[str, Function]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.functions = functions
        self.calls = Calls()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: DeployServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.startswith(INVOKE_PREFIX) and self.path.endswith("/invocations"):
            self._invoke(unquote(self.path[len(INVOKE_PREFIX) : -len("/invocations")]), body)
        elif self.headers.get("X-Amz-Target") == HOOK_TARGET:
            request = json.loads(body)
            self.server.calls.statuses.append(request)
            reply = {"lifecycleEventHookExecutionId": request["lifecycleEventHookExecutionId"]}
            self._send(200, reply, {"Content-Type": "application/x-amz-json-1.1"})
        else:
            self._send(400, {"__type": "UnknownOperationException", "message": self.path}, {})

    def _invoke(self, name: str, body: bytes) -> None:
        event = json.loads(body or b"{}")
        self.server.calls.invocations.append((name, event))
        function = self.server.functions.get(name)
        if function is None:
            error = {"Type": "User", "message": f"Function not found: {name}"}
            self._send(404, error, {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        try:
            self._send(200, function(event), {"X-Amz-Executed-Version": name.rsplit(":", 1)[-1]})
        except Exception as exc:  # noqa: BLE001 - what Lambda answers for an unhandled one
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            self._send(200, error, {"X-Amz-Function-Error": "Unhandled"})

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def deploy_endpoint(functions: dict[str, Function]) -> Iterator[DeployServer]:
    """The server for the block; boto3's Lambda and CodeDeploy clients are sent to it."""
    server = DeployServer(functions)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    names = [*AWS_ENV, "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_CODEDEPLOY"]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(
        {
            **AWS_ENV,
            "AWS_ENDPOINT_URL_LAMBDA": server.endpoint,
            "AWS_ENDPOINT_URL_CODEDEPLOY": server.endpoint,
        }
    )
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def labelled_folder(root: Path, split: str, photos: dict[str, list[tuple[int, int, int]]]) -> Path:
    """``root/split/<category>/NN.png``: one plain PNG per colour (exact pixels, unlike
    JPEG), as the dataset lays a split out. Returns ``root``."""
    for category, colours in photos.items():
        folder = root / split / category
        folder.mkdir(parents=True, exist_ok=True)
        for index, colour in enumerate(colours):
            Image.new("RGB", (40, 40), colour).save(folder / f"{index:02d}.png")
    return root
