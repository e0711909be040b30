"""The handler's contract: every event shape, every error status, the model's metadata."""

from __future__ import annotations

import base64
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from lambda_function import handler
from lambda_function.config import Config
from lambda_function.errors import ModelUnavailableError
from lambda_function.model import Classifier, download_model
from tests.images import png_claiming
from tests.lambda_testing import (
    BLUE,
    GREEN,
    LABELS,
    RED,
    FakeContext,
    assert_error,
    assert_prediction,
    b64,
    body_of,
    build_model,
    image_bytes,
    load_event,
)

SIZE = 32


@pytest.fixture
def configure(function_env, tiny_model: Path):  # type: ignore[no-untyped-def]
    """Set the function's environment; the next request builds the service from it."""

    def apply(**env: object) -> None:
        function_env(**{"MODEL_PATH": tiny_model, "ALLOW_LOOPBACK_FOR_TESTS": 1, **env})

    apply()
    return apply


def invoke(event: Any, context: FakeContext | None = None) -> dict[str, Any]:
    return handler.lambda_handler(event, context or FakeContext())


def api_event(name: str, **body: Any) -> dict[str, Any]:
    """An event from ``events/`` with its JSON body replaced (kept base64 if it was)."""
    event = load_event(name)
    text = json.dumps(body)
    event["body"] = b64(text.encode()) if event["isBase64Encoded"] else text
    return event


# -- every event shape answers the documented schema ---------------------------------


def test_a_direct_url_invocation_answers_the_prediction(configure, images) -> None:
    answer = invoke({"url": images.url("/red.jpg")})
    assert_prediction(answer, LABELS, SIZE)
    assert answer["category"] == LABELS[0]
    assert answer["model"]["version"] == "0123456789ab"


def test_a_direct_base64_image_is_classified_without_fetching(configure) -> None:
    answer = invoke({"image": b64(image_bytes(GREEN))})
    assert_prediction(answer, LABELS, SIZE)
    assert answer["category"] == LABELS[1]


def test_a_direct_s3_url_is_classified(configure, monkeypatch) -> None:
    from lambda_function.fetch import s3

    monkeypatch.setattr(s3, "fetch_s3", lambda url, policy, deadline: image_bytes(BLUE))
    answer = invoke({"url": "s3://shop-uploads/listing/1.jpg"})
    assert answer["category"] == LABELS[2]


def test_a_batch_answers_each_url_on_its_own(configure, images) -> None:
    urls = [images.url("/red.jpg"), images.url("/missing.jpg"), images.url("/blue.jpg")]
    answer = invoke({"urls": urls})
    first, missing, last = answer["results"]
    assert [r["url"] for r in answer["results"]] == urls
    assert_prediction(first, LABELS, SIZE)
    assert (first["category"], last["category"]) == (LABELS[0], LABELS[2])
    assert missing["status"] == 422
    assert missing["error"]["code"] == "upstream_status"


def test_the_events_direct_url_file_is_answered(configure, images) -> None:
    event = load_event("direct-url.json")
    event["url"] = images.url("/red.jpg")
    assert invoke(event)["category"] == LABELS[0]


def test_the_events_direct_batch_file_is_answered(configure, images) -> None:
    event = load_event("direct-batch.json")
    event["urls"] = [images.url("/green.jpg"), images.url("/blue.jpg")]
    results = invoke(event)["results"]
    assert [r["category"] for r in results] == [LABELS[1], LABELS[2]]


@pytest.mark.parametrize("name", ["http-api-url.json", "rest-api-url.json"])
def test_api_gateway_json_bodies_are_answered(configure, images, name: str) -> None:
    response = invoke(api_event(name, url=images.url("/red.jpg")))
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is False
    answer = body_of(response)
    assert_prediction(answer, LABELS, SIZE)
    assert answer["category"] == LABELS[0]


def test_a_rest_api_body_that_is_not_base64_encoded_is_read_as_is(configure, images) -> None:
    event = load_event("rest-api-url.json")
    event["isBase64Encoded"] = False
    event["body"] = json.dumps({"image": b64(image_bytes(BLUE))})
    assert body_of(invoke(event))["category"] == LABELS[2]


def test_the_events_upload_file_is_answered_from_raw_image_bytes(configure) -> None:
    event = load_event("http-api-upload.json")
    assert event["headers"]["content-type"] == "image/jpeg"
    response = invoke(event)
    assert response["statusCode"] == 200
    assert_prediction(body_of(response), LABELS, SIZE)


def test_a_raw_upload_through_the_rest_api_is_answered(configure) -> None:
    event = load_event("rest-api-url.json")
    event["headers"]["Content-Type"] = "image/jpeg"
    event["body"] = b64(image_bytes(RED))
    assert body_of(invoke(event))["category"] == LABELS[0]


def test_the_events_bad_request_file_is_a_400(configure) -> None:
    response = invoke(load_event("http-api-bad-request.json"), FakeContext(aws_request_id="r-1"))
    assert response["statusCode"] == 400
    answer = body_of(response)
    assert_error(answer, "bad_request")
    assert answer["request_id"] == "r-1"


def test_every_event_file_is_used_by_a_test() -> None:
    used = {"direct-url.json", "direct-batch.json", "http-api-url.json", "rest-api-url.json"}
    used |= {"http-api-upload.json", "http-api-bad-request.json"}
    # The upload path's (tests/test_uploads.py, test_backfill.py, test_redrive.py):
    used |= {"s3-put.json", "s3-put-versioned.json", "backfill-batch.json"}
    used |= {"upload-failure-record.json"}
    used |= {"http-api-feedback.json"}  # POST /feedback (tests/test_feedback.py)
    events_dir = Path(__file__).resolve().parent.parent / "events"
    assert {path.name for path in events_dir.glob("*.json")} == used


# -- every error maps to its status ------------------------------------------------------


def _truncated_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 60).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()[:2000]


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        ({}, 400, "bad_request"),
        ("https://example.com/a.jpg", 400, "bad_request"),
        ({"url": "a", "image": "b"}, 400, "bad_request"),
        ({"url": 5}, 400, "invalid_url"),
        ({"urls": []}, 400, "bad_request"),
        ({"urls": ["http://x.test/a.jpg"] * 9}, 400, "bad_request"),
        ({"image": "not base64!"}, 400, "invalid_base64"),
        ({"image": ""}, 400, "empty_image"),
        ({"url": "ftp://example.com/a.jpg"}, 400, "invalid_url"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 400, "url_not_allowed"),
        ({"image": b64(b"plain text, not a photo")}, 415, "unsupported_image"),
        ({"image": b64(_truncated_jpeg())}, 422, "corrupt_image"),
    ],
)
def test_malformed_and_unusable_requests_get_their_status(configure, event, status, code) -> None:
    answer = invoke(event)
    assert_error(answer, code)
    assert answer["status"] == status


def test_api_gateway_errors_carry_the_status_code(configure) -> None:
    event = api_event("http-api-url.json", image=b64(_truncated_jpeg()))
    response = invoke(event)
    assert response["statusCode"] == 422
    assert "status" not in body_of(response)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", "{not json", 400, "invalid_json"),
        ("application/json", "", 400, "empty_body"),
        ("text/html", "<html></html>", 415, "unsupported_media_type"),
    ],
)
def test_api_gateway_bodies_that_cannot_be_read(
    configure, content_type, body, status, code
) -> None:
    event = load_event("http-api-url.json")
    event["headers"]["content-type"] = content_type
    event["body"] = body
    response = invoke(event)
    assert response["statusCode"] == status
    assert_error(body_of(response), code)


def test_an_api_event_whose_body_is_not_a_string_is_a_400(configure) -> None:
    event = load_event("http-api-url.json")
    event["body"] = {"url": "https://example.com/a.jpg"}
    assert_error(body_of(invoke(event)), "bad_request")


def test_too_many_pixels_is_a_413(configure) -> None:
    configure(MAX_PIXELS=1000)
    assert invoke({"image": b64(image_bytes(size=(64, 48)))})["status"] == 413


def test_a_decompression_bomb_is_a_413_before_decoding(configure) -> None:
    answer = invoke({"image": b64(png_claiming(8_000, 8_000))})
    assert (answer["status"], answer["error"]["code"]) == (413, "image_too_large")


def test_too_many_bytes_is_a_413_for_uploads_and_urls(configure, images) -> None:
    configure(MAX_IMAGE_BYTES=100)
    upload = invoke({"image": b64(image_bytes())})
    fetched = invoke({"url": images.url("/red.jpg")})
    assert (upload["status"], fetched["status"]) == (413, 413)
    assert_error(fetched, "image_too_large")


def test_a_url_that_is_not_an_image_is_a_415(configure, images) -> None:
    assert invoke({"url": images.url("/notes.txt")})["status"] == 415


def test_a_missing_upstream_image_is_a_422(configure, images) -> None:
    assert_error(invoke({"url": images.url("/gone.jpg")}), "upstream_status")


def test_a_slow_upstream_is_a_504_within_the_fetch_timeout(configure, images) -> None:
    configure(FETCH_TIMEOUT=0.5)
    started = time.monotonic()
    answer = invoke({"url": images.url("/slow.jpg")})
    assert time.monotonic() - started < 1.4
    assert (answer["status"], answer["error"]["code"]) == (504, "upstream_timeout")


def test_no_time_left_in_the_invocation_is_a_504_before_fetching(configure, images) -> None:
    answer = invoke({"url": images.url("/red.jpg")}, FakeContext(remaining_ms=1500))
    assert answer["status"] == 504
    assert images.connections == 0


def test_our_own_bugs_are_an_opaque_500(configure, monkeypatch) -> None:
    def broken(self: Classifier, batch: Any) -> Any:
        raise RuntimeError("secret internals")

    invoke({"image": b64(image_bytes())})  # the service is built and warm
    monkeypatch.setattr(Classifier, "predict", broken)
    answer = invoke({"image": b64(image_bytes())}, FakeContext(aws_request_id="r-500"))
    assert answer["status"] == 500
    assert_error(answer, "internal_error")
    assert "secret" not in answer["error"]["message"]
    assert answer["request_id"] == "r-500"


def test_a_missing_model_is_a_500_whose_log_says_how_to_make_one(
    configure, tmp_path, caplog
) -> None:
    configure(MODEL_PATH=tmp_path / "absent.onnx")
    answer = invoke({"image": b64(image_bytes())})
    assert answer["status"] == 500
    assert_error(answer, "model_unavailable")
    assert "absent.onnx" not in answer["error"]["message"]  # no path for the caller
    assert "python -m convert" in caplog.text and "absent.onnx" in caplog.text


# -- the model's metadata drives labels and size -----------------------------------------


def test_labels_and_input_size_come_from_the_models_metadata(configure, tmp_path) -> None:
    labels = ("red", "green", "blue", "x")
    model = build_model(tmp_path / "other.onnx", labels=labels, image_size=20)
    configure(MODEL_PATH=model)
    answer = invoke({"image": b64(image_bytes(BLUE, size=(300, 200)))})
    assert_prediction(answer, labels, 20)
    assert answer["category"] == "blue"


def test_a_model_without_metadata_is_refused_with_a_clear_error(tmp_path) -> None:
    model = build_model(tmp_path / "bare.onnx", metadata={})
    with pytest.raises(ModelUnavailableError, match=r"Expected ONNX metadata.*python -m convert"):
        Classifier.load(model)


def test_a_model_whose_graph_contradicts_its_metadata_is_refused(tmp_path) -> None:
    from lambda_function.model_metadata import ModelMetadata

    props = ModelMetadata(labels=LABELS, image_size=64).to_props()
    model = build_model(tmp_path / "liar.onnx", image_size=32, metadata=props)
    with pytest.raises(ModelUnavailableError, match=r"shape \(N, 64, 64, 3\)"):
        Classifier.load(model)


def test_scores_are_softmax_probabilities(tiny_model) -> None:
    import numpy as np

    classifier = Classifier.load(tiny_model)
    probabilities = classifier.predict(np.zeros((2, SIZE, SIZE, 3), dtype=np.float32))
    assert probabilities.shape == (2, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[0], 1 / len(LABELS))


def test_a_model_in_s3_is_downloaded_once_into_tmp(tiny_model, tmp_path, monkeypatch) -> None:
    downloads: list[tuple[str, str]] = []

    class FakeS3:
        def download_file(self, bucket: str, key: str, filename: str) -> None:
            downloads.append((bucket, key))
            Path(filename).write_bytes(tiny_model.read_bytes())

    fake_boto3 = types.SimpleNamespace(client=lambda name: FakeS3())
    monkeypatch.setitem(sys.modules, "boto3", fake_boto3)
    first = download_model("s3://models/fashion/model.onnx", tmp_path)
    second = download_model("s3://models/fashion/model.onnx", tmp_path)
    assert first == second and first.read_bytes() == tiny_model.read_bytes()
    assert downloads == [("models", "fashion/model.onnx")]


# -- settings ------------------------------------------------------------------------------


def test_threads_follow_lambda_memory_not_the_visible_cores(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert Config.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}).intra_op_threads == 1
    assert Config.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}).intra_op_threads == 2
    assert Config.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}).intra_op_threads == 6
    assert Config.from_env({}).intra_op_threads == 6
    assert Config.from_env({"ORT_INTRA_OP_THREADS": "3"}).intra_op_threads == 3


def test_invalid_settings_say_what_was_received() -> None:
    with pytest.raises(ValueError, match=r"MAX_BATCH.*Received: 'many'"):
        Config.from_env({"MAX_BATCH": "many"})


def test_loopback_is_reachable_only_with_the_test_setting() -> None:
    assert Config.from_env({}).allow_loopback_for_tests is False
    assert Config.from_env({"ALLOW_LOOPBACK_FOR_TESTS": "1"}).allow_loopback_for_tests is True
    template = (Path(__file__).resolve().parent.parent / "template.yaml").read_text()
    assert "ALLOW_LOOPBACK_FOR_TESTS" not in template


def test_without_the_test_setting_a_loopback_url_is_refused_unconnected(configure, images) -> None:
    configure(ALLOW_LOOPBACK_FOR_TESTS=0, FETCH_ALLOWED_PORTS=images.server_address[1])
    answer = invoke({"url": images.url("/red.jpg")})
    assert_error(answer, "url_not_allowed")
    assert images.connections == 0


def test_base64_is_decoded_strictly_but_tolerates_line_breaks(configure) -> None:
    wrapped = base64.encodebytes(image_bytes(RED)).decode("ascii")
    assert "\n" in wrapped
    assert invoke({"image": wrapped})["category"] == LABELS[0]


def test_hardening_settings_are_read_and_checked() -> None:
    config = Config.from_env({"FETCH_RETRIES": "0", "S3_ALLOWED_BUCKETS": " shop, models ,"})
    assert (config.fetch_retries, config.s3_allowed_buckets) == (0, ("shop", "models"))
    assert Config.from_env({}).s3_allowed_buckets == ()
    assert Config.from_env({"MAX_IMAGE_BYTES": "1000"}).upload_cap == 1000
    uri = "s3://models/fashion/serve.onnx"
    assert Config.from_env({"MODEL_S3_URI": uri}).model_s3_uri == uri
    assert Config.from_env({"FETCH_MAX_REDIRECTS": "0"}).max_redirects == 0
    with pytest.raises(ValueError, match=r"FETCH_RETRIES.*Received: '9'"):
        Config.from_env({"FETCH_RETRIES": "9"})


def test_an_s3_url_is_read_from_an_allowed_bucket_head_first(configure, monkeypatch) -> None:
    from lambda_function.fetch import s3

    calls: list[str] = []

    class FakeS3:
        def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
            calls.append(f"head {Bucket}/{Key}")
            return {"ContentLength": len(image_bytes(BLUE))}

        def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
            import io

            calls.append(f"get {Bucket}/{Key}")
            return {"Body": io.BytesIO(image_bytes(BLUE))}

    monkeypatch.setattr(s3, "s3_client", lambda *args: FakeS3())
    configure(S3_ALLOWED_BUCKETS="shop-uploads")
    assert invoke({"url": "s3://shop-uploads/listing/1.jpg"})["category"] == LABELS[2]
    assert_error(invoke({"url": "s3://other-bucket/listing/1.jpg"}), "url_not_allowed")
    assert calls == ["head shop-uploads/listing/1.jpg", "get shop-uploads/listing/1.jpg"]


def test_a_local_call_without_a_lambda_context_gets_an_answer(configure) -> None:
    image = base64.b64encode(image_bytes(RED)).decode("ascii")
    assert handler.lambda_handler({"image": image}, None)["category"] == LABELS[0]


def test_a_model_loads_with_one_thread_each_unless_told(tiny_model) -> None:
    options = Classifier.load(tiny_model).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\x08\x07\x12\x07pytorch" + bytes(range(256)) * 40, "unsupported_image"),
        (png_claiming(8_000, 8_000), "image_too_large"),
        (image_bytes(BLUE)[:300], "unsupported_image"),
    ],
    ids=["model-bytes", "bomb-header", "truncated-jpeg"],
)
def test_an_s3_object_that_is_no_image_is_refused_without_its_size_or_bytes(
    configure, caplog, body: bytes, code: str
) -> None:
    """The bucket is the deployment's (it may hold the model): the answer says what is
    wrong, never how large the object is or how it starts. The log keeps that."""
    import boto3

    from lambda_function.fetch import s3
    from tests import aws_local

    with aws_local.moto_endpoint():
        s3.s3_client.cache_clear()
        boto3.client("s3").create_bucket(Bucket="shop-models")
        boto3.client("s3").put_object(Bucket="shop-models", Key="fashion/serve.onnx", Body=body)
        configure(S3_ALLOWED_BUCKETS="shop-models")
        answer = invoke({"url": "s3://shop-models/fashion/serve.onnx"})
    s3.s3_client.cache_clear()

    assert_error(answer, code)
    message = answer["error"]["message"]
    assert "s3:// object is not one" in message
    for leak in (str(len(body)), f"{len(body):,}", repr(body[:8])[2:-1], "8000x8000"):
        assert leak not in message, leak
    assert f"Received {len(body)} bytes" in caplog.text or "8000x8000" in caplog.text
