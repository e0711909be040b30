"""The one JSON line per request: its fields, its metrics (EMF), what it must never contain."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from lambda_function import handler, observe
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
    "request_id", "source", "input", "hosts", "items", "bytes", "image_sizes", "item_errors",
    "fetch_ms", "decode_ms", "inference_ms", "total_ms", "status", "code", "cold_start",
}  # fmt: skip
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
EMF_SCHEMA = {
    # The structure of CloudWatch's Embedded Metric Format specification (the root node).
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1},
                                        "Unit": {"enum": sorted(UNITS)},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def metrics_of(document: dict[str, Any]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Check ``document`` against the EMF specification; its metrics by (name, dimensions).

    Beyond the schema, the spec requires every dimension a set names to be a string member
    of the root node, and every metric it names to be a number there."""
    jsonschema.validate(document, EMF_SCHEMA)
    found = {}
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimensions in directive["Dimensions"]:
            for name in dimensions:
                assert isinstance(document.get(name), str) and document[name], name
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                assert isinstance(value, int | float) and not isinstance(value, bool), metric
                found[(metric["Name"], tuple(dimensions))] = value
    return found


@pytest.fixture
def function(function_env, tiny_model, capsys):  # type: ignore[no-untyped-def]
    """The handler with loopback allowed; returns the lines each invocation prints."""
    function_env(
        MODEL_PATH=tiny_model,
        ALLOW_LOOPBACK_FOR_TESTS=1,
        AWS_LAMBDA_FUNCTION_NAME="fashion-predict",
        METRICS_NAMESPACE="Shop/Fashion",
    )
    handler.get_service()  # the model-loaded line is not a request line

    def invoke(event: Any, request_id: str = "req-1") -> list[dict[str, Any]]:
        """The request lines (the answer-distribution lines: tests/test_answer_metrics.py)."""
        capsys.readouterr()
        handler.lambda_handler(event, FakeContext(aws_request_id=request_id))
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [line for line in lines if line.get("event") != "answers"]

    return invoke


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with serving({SIGNED: send(JPEG)}) as image_server:
        yield image_server


def test_a_request_prints_exactly_one_line_with_every_field(function, server) -> None:
    (line,) = function({"url": server.url(SIGNED)}, "req-42")
    assert set(line) >= FIELDS
    assert line["request_id"] == "req-42"
    assert (line["source"], line["input"], line["hosts"]) == ("direct", "url", ["127.0.0.1"])
    assert (line["items"], line["bytes"], line["image_sizes"]) == (1, len(JPEG), ["64x48"])
    assert (line["status"], line["code"], line["item_errors"]) == (200, "", [])
    for name in ("fetch_ms", "decode_ms", "inference_ms", "total_ms"):
        assert isinstance(line[name], float) and line[name] > 0
    assert line["total_ms"] >= line["fetch_ms"]


def test_a_200_carries_its_requests_latencies_and_bytes_as_metrics(function, server) -> None:
    (line,) = function({"url": server.url(SIGNED)})
    metrics = metrics_of(line)
    assert {d["Namespace"] for d in line["_aws"]["CloudWatchMetrics"]} == {"Shop/Fashion"}
    assert (line["Function"], line["Source"], line["StatusClass"]) == (
        "fashion-predict",
        "direct",
        "2xx",
    )
    for dimensions in [("Function",), ("Function", "Source"), ("Function", "StatusClass")]:
        assert metrics[("Requests", dimensions)] == 1
    alone = ("Function",)
    assert metrics[("Latency", alone)] == line["total_ms"]
    assert metrics[("FetchLatency", alone)] == line["fetch_ms"]
    assert metrics[("DecodeLatency", alone)] == line["decode_ms"]
    assert metrics[("InferenceLatency", alone)] == line["inference_ms"]
    assert metrics[("ImageBytes", alone)] == len(JPEG)
    assert not any(name == "Errors" for name, _ in metrics)
    units = {m["Name"]: m["Unit"] for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert units["Latency"] == "Milliseconds" and units["ImageBytes"] == "Bytes"


def test_a_4xx_is_counted_by_status_class_and_code_without_stage_latencies(function) -> None:
    event = load_event("http-api-url.json")
    event["body"], event["isBase64Encoded"] = "{not json", False
    (line,) = function(event)
    assert (line["source"], line["input"], line["status"], line["code"]) == (
        "http_api",
        "unparsed",
        400,
        "invalid_json",
    )
    metrics = metrics_of(line)
    assert (line["StatusClass"], line["ErrorCode"], line["Source"]) == (
        "4xx",
        "invalid_json",
        "http_api",
    )
    assert metrics[("Errors", ("Function", "ErrorCode"))] == 1
    assert metrics[("Requests", ("Function", "StatusClass"))] == 1
    assert {name for name, _ in metrics} == {"Requests", "Errors", "Latency", "ColdStart"}


UPLOAD_SHAPED = {
    "s3": {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}}]},
    "s3-test-event": {"Event": "s3:TestEvent", "Bucket": "b"},
    "backfill": {"Items": [{"Key": "catalogue/a.jpg"}], "BatchInput": {"bucket": "b"}},
}


@pytest.mark.parametrize("shape", sorted(UPLOAD_SHAPED))
def test_an_upload_shaped_event_is_a_counted_400_not_a_crash(function, shape) -> None:
    """The predict function has no results table: S3 notifications and backfill batches are
    the upload function's. Answered (not raised), they never count as Lambda errors."""
    (line,) = function(UPLOAD_SHAPED[shape])
    assert (line["status"], line["code"], line["StatusClass"]) == (400, "wrong_function", "4xx")
    assert metrics_of(line)[("Errors", ("Function", "ErrorCode"))] == 1


def test_a_5xx_is_counted_by_status_class_and_code(function, function_env, tmp_path) -> None:
    function_env(MODEL_PATH=tmp_path / "absent.onnx")
    (line,) = function({"image": b64(JPEG)})
    metrics = metrics_of(line)
    assert (line["status"], line["StatusClass"], line["ErrorCode"]) == (
        500,
        "5xx",
        "model_unavailable",
    )
    assert metrics[("Errors", ("Function", "ErrorCode"))] == 1
    assert "absent.onnx" not in json.dumps(line)  # paths stay out of the request line


def test_cold_start_is_one_for_the_first_request_of_the_process_only(function, monkeypatch) -> None:
    monkeypatch.setitem(handler._process, "cold", True)
    first = function({"image": b64(JPEG)})[0]
    second = function({"image": b64(JPEG)})[0]
    assert (first["cold_start"], second["cold_start"]) == (True, False)
    assert (first["ColdStart"], second["ColdStart"]) == (1, 0)


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


def test_an_upload_logs_its_bytes_and_decoded_size_without_fetch_time(function) -> None:
    sideways = images.with_orientation(images.noise("RGB", size=(60, 20)), 6)
    (line,) = function({"image": b64(sideways)})
    assert (line["input"], line["hosts"], line["bytes"]) == ("image", [], len(sideways))
    assert line["image_sizes"] == ["60x20"]  # upright, as the model sees it
    assert line["fetch_ms"] == 0.0
    assert "FetchLatency" not in {name for name, _ in metrics_of(line)}


def test_a_batch_logs_every_host_size_and_item_error(function, server) -> None:
    urls = [server.url(SIGNED), server.url("/missing.jpg"), "s3://not-allowed/key.jpg"]
    (line,) = function({"urls": urls})
    assert line["input"] == "batch" and line["items"] == 3
    assert line["hosts"] == ["127.0.0.1", "127.0.0.1", "not-allowed"]
    assert line["image_sizes"] == ["64x48"] and line["status"] == 200
    assert len(line["item_errors"]) == 2 and line["bytes"] == len(JPEG)
    metrics_of(line)


def test_an_unloadable_model_gives_an_init_failure_line_with_its_reason() -> None:
    line = observe.init_failure(ValueError("Expected ORT_INTRA_OP_THREADS ... 'abc'"), {})
    assert metrics_of(line) == {("InitFailures", ("Function",)): 1}
    assert (line["event"], line["error"]) == ("init_failed", "ValueError")
    assert "ORT_INTRA_OP_THREADS" in line["reason"]


def test_outside_lambda_the_metrics_are_filed_under_local() -> None:
    document = observe.init_failure(ValueError("no model"), environ={})
    assert document["Function"] == "local"
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == observe.DEFAULT_NAMESPACE
