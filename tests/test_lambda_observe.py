"""The one JSON log line per request: its fields, and what it must never contain."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest

from lambda_function import handler
from lambda_function.preprocessing import preprocess
from tests import images
from tests.lambda_testing import (
    FakeContext,
    b64,
    image_bytes,
    load_event,
    send,
    serving,
)

JPEG = image_bytes(size=(64, 48))
SIGNED = "/shop/listing-7/photo.jpg?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIAKEY"
FIELDS = {
    "request_id", "source", "input", "hosts", "items", "bytes", "image_sizes", "fetch_ms",
    "decode_ms", "inference_ms", "total_ms", "status", "code", "cold_start",
}  # fmt: skip


@pytest.fixture
def function(function_env, tiny_model, caplog):  # type: ignore[no-untyped-def]
    """The handler with loopback allowed; returns the log lines of each invocation."""
    function_env(MODEL_PATH=tiny_model, ALLOW_LOOPBACK_FOR_TESTS=1)
    handler.get_service()  # the model-loaded line is not a request line
    caplog.set_level(logging.INFO, logger="lambda_function")

    def invoke(event: Any, request_id: str = "req-1") -> list[dict[str, Any]]:
        caplog.clear()
        handler.lambda_handler(event, FakeContext(aws_request_id=request_id))
        return [json.loads(record.getMessage()) for record in caplog.records]

    return invoke


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    routes = {
        "/shop/listing-7/photo.jpg?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIAKEY": send(JPEG)
    }
    with serving(routes) as image_server:
        yield image_server


def test_a_request_logs_exactly_one_line_with_every_field(function, server) -> None:
    (line,) = function({"url": server.url(SIGNED)}, "req-42")
    assert set(line) == FIELDS
    assert line["request_id"] == "req-42"
    assert (line["source"], line["input"], line["hosts"]) == ("direct", "url", ["127.0.0.1"])
    assert (line["items"], line["bytes"], line["image_sizes"]) == (1, len(JPEG), ["64x48"])
    assert (line["status"], line["code"]) == (200, "")
    for name in ("fetch_ms", "decode_ms", "inference_ms", "total_ms"):
        assert isinstance(line[name], float) and line[name] >= 0
    assert line["total_ms"] >= line["fetch_ms"]


@pytest.mark.parametrize("path", [SIGNED, SIGNED.replace("photo.jpg", "gone.jpg")])
def test_a_presigned_urls_path_and_signature_never_reach_the_log(function, server, path) -> None:
    lines = function({"url": server.url(path)})
    text = json.dumps(lines)
    for secret in ("SECRETSIG", "AKIAKEY", "X-Amz", "listing-7", "photo.jpg", "gone.jpg"):
        assert secret not in text


def test_refused_and_malformed_urls_log_only_the_host(function) -> None:
    (refused,) = function({"url": "http://169.254.169.254/latest/meta-data/?token=SECRETSIG"})
    assert (refused["status"], refused["code"], refused["hosts"]) == (
        400,
        "url_not_allowed",
        ["169.254.169.254"],
    )
    (malformed,) = function({"url": "http://[::1/SECRETSIG"})
    assert malformed["hosts"] == [""] and "SECRETSIG" not in json.dumps(malformed)


def test_cold_start_is_true_for_the_first_request_of_the_process_only(
    function, monkeypatch
) -> None:
    monkeypatch.setitem(handler._process, "cold", True)
    first = function({"image": b64(JPEG)})[0]
    second = function({"image": b64(JPEG)})[0]
    assert (first["cold_start"], second["cold_start"]) == (True, False)


def test_an_upload_logs_its_bytes_and_decoded_size_without_fetch_time(function) -> None:
    sideways = images.with_orientation(images.noise("RGB", size=(60, 20)), 6)
    (line,) = function({"image": b64(sideways)})
    assert (line["input"], line["hosts"], line["bytes"]) == ("image", [], len(sideways))
    assert line["image_sizes"] == ["60x20"]  # upright, as the model sees it
    assert line["fetch_ms"] == 0.0


def test_a_batch_logs_every_host_and_size(function, server) -> None:
    urls = [server.url(SIGNED), server.url("/missing.jpg"), "s3://not-allowed/key.jpg"]
    (line,) = function({"urls": urls})
    assert line["input"] == "batch" and line["items"] == 3
    assert line["hosts"] == ["127.0.0.1", "127.0.0.1", "not-allowed"]
    assert line["image_sizes"] == ["64x48"] and line["status"] == 200


def test_an_api_gateway_error_logs_its_status_and_code(function) -> None:
    event = load_event("http-api-url.json")
    event["body"], event["isBase64Encoded"] = "{not json", False
    (line,) = function(event)
    assert (line["source"], line["input"], line["status"], line["code"]) == (
        "http_api",
        "unparsed",
        400,
        "invalid_json",
    )


@pytest.mark.parametrize("case", images.cases()[:6], ids=lambda case: case.name)
def test_the_services_step_by_step_preprocessing_is_the_contracts(function, case) -> None:
    """The service decodes and prepares in two steps (to log the decoded size): it must
    produce exactly what ``preprocessing.preprocess`` does."""
    from lambda_function.observe import ItemTrace

    service = handler.get_service()
    ours = service._preprocess(case.data, ItemTrace())
    np.testing.assert_array_equal(ours, preprocess(case.data, 32))
