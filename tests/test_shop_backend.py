"""examples/shop_backend.py, as the shop runs it: against moto, and an API Gateway stand-in.

moto does not run Lambda, so S3's delivery of the notification is played by the test:
the event S3 sends for the upload goes to the upload function's handler.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from examples import shop_backend
from lambda_function import handler, uploads
from tests import aws_local
from tests.lambda_testing import RED, FakeContext, image_bytes, load_event

BUCKET, TABLE, KEY = "shop-uploads", "shop-results", "uploads/seller-42/listing 7.jpg"


@pytest.fixture(scope="module")
def shop(tiny_model: Path) -> Iterator[dict[str, Any]]:
    with aws_local.moto_endpoint(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(tiny_model))
        patch.setenv("RESULTS_TABLE", TABLE)
        handler.get_service.cache_clear()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        aws_local.create_results_table(TABLE)
        yield {"s3": boto3.client("s3"), "dynamodb": boto3.client("dynamodb")}
        handler.get_service.cache_clear()


def s3_delivers(key: str, etag: str, size: int) -> None:
    """What S3 and Lambda do after the upload: the notification reaches the upload function."""
    uploads.lambda_handler(aws_local.s3_put_event(BUCKET, key, etag, size), FakeContext())


def test_an_upload_is_read_back_as_a_suggestion(shop: dict[str, Any]) -> None:
    data = image_bytes(RED)
    etag = shop_backend.upload_photo(shop["s3"], BUCKET, KEY, data)
    assert shop_backend.read_suggestion(shop["dynamodb"], TABLE, BUCKET, KEY, etag) is None

    s3_delivers(KEY, etag, len(data))

    found = shop_backend.read_suggestion(shop["dynamodb"], TABLE, BUCKET, KEY, etag)
    assert found is not None and found["category"] == "dress"
    assert found["probability"] == max(found["scores"].values())
    assert shop_backend.latest_suggestion(shop["dynamodb"], TABLE, BUCKET, KEY) == found


def test_waiting_returns_the_suggestion_once_the_row_is_written(shop: dict[str, Any]) -> None:
    key, data = "uploads/seller-42/listing 8.jpg", image_bytes(RED, (80, 60))
    etag = shop_backend.upload_photo(shop["s3"], BUCKET, key, data)
    delivery = threading.Thread(target=s3_delivers, args=(key, etag, len(data)))
    delivery.start()

    found = shop_backend.wait_for_suggestion(
        shop["dynamodb"], TABLE, BUCKET, key, etag, timeout_s=20, poll_s=0.05
    )

    delivery.join()
    assert found is not None and found["category"] == "dress"


def test_waiting_gives_up_after_the_timeout(shop: dict[str, Any]) -> None:
    found = shop_backend.wait_for_suggestion(
        shop["dynamodb"], TABLE, BUCKET, "uploads/never.jpg", "0" * 32, timeout_s=0.2, poll_s=0.05
    )
    assert found is None


def test_a_photo_that_is_not_an_image_reads_back_as_an_error(shop: dict[str, Any]) -> None:
    key, data = "uploads/seller-42/notes.jpg", b"a text file named .jpg"
    etag = shop_backend.upload_photo(shop["s3"], BUCKET, key, data)
    s3_delivers(key, etag, len(data))

    found = shop_backend.read_suggestion(shop["dynamodb"], TABLE, BUCKET, key, etag)
    assert found is not None and found["error"] == "unsupported_image"


class _ApiGateway(BaseHTTPRequestHandler):
    """POST /predict as API Gateway's HTTP API delivers it: a v2 event to the handler."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event = load_event("http-api-upload.json")
        event["headers"] = {"content-type": self.headers["Content-Type"]}
        event["body"] = base64.b64encode(body).decode()
        answer = handler.lambda_handler(event, FakeContext())
        payload = answer["body"].encode()
        self.send_response(answer["statusCode"])
        self.send_header("Content-Type", answer["headers"]["Content-Type"])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def predict_url(shop: dict[str, Any]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiGateway)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()
    server.server_close()


def test_the_synchronous_path_answers_at_once(predict_url: str) -> None:
    answer = shop_backend.classify_now(predict_url, image_bytes(RED))
    assert answer["category"] == "dress"


def test_the_synchronous_path_returns_the_error_body(predict_url: str) -> None:
    answer = shop_backend.classify_now(predict_url, b"not an image", content_type="image/jpeg")
    assert answer["status"] == 415 and answer["error"]["code"] == "unsupported_image"
    assert json.dumps(answer)
