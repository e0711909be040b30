"""The upload path against moto over HTTP: S3 events in, one correct row per photo out.

The tiny model maps colours to labels (red is ``dress``, blue is ``longsleeve``), so a
row's category can be predicted; for a real dataset photo, the row must equal what the
service answers for the same bytes.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambda_function import handler, uploads
from lambda_function.failures import TransientError
from lambda_function.photos import Photo
from tests import aws_local
from tests.aws_local import (
    create_results_table,
    dynamodb_throttling,
    faulty_proxy,
    many_records,
    rows,
    s3_put_event,
)
from tests.lambda_testing import BLUE, GREEN, LABELS, RED, FakeContext, image_bytes

SIZE = 32
TABLE = "fashion-results"
NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with aws_local.moto_endpoint() as url:
        yield url


@pytest.fixture
def aws(endpoint: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, request):  # type: ignore[no-untyped-def]
    """A fresh bucket and results table, and the function's environment pointing at them."""
    name = f"{next(NUMBERS)}-{request.node.originalname.replace('_', '-')[5:35]}".strip("-")
    bucket = f"uploads-{name}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    table = f"{TABLE}-{name}"
    create_results_table(table)
    monkeypatch.setenv("MODEL_PATH", str(tiny_model))
    monkeypatch.setenv("RESULTS_TABLE", table)
    handler.get_service.cache_clear()
    aws_local.clear_clients()
    yield {"s3": s3, "bucket": bucket, "table": table}
    handler.get_service.cache_clear()
    aws_local.clear_clients()


def upload(aws: dict[str, Any], key: str, data: bytes) -> dict[str, Any]:
    """Put ``data`` at ``key``; the S3 event notification S3 would send for it."""
    answer = aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=data)
    return s3_put_event(
        aws["bucket"], key, answer["ETag"].strip('"'), len(data), answer.get("VersionId", "")
    )


def deliver(event: dict[str, Any]) -> dict[str, Any]:
    """What Lambda does with an S3 notification: call the upload function's handler."""
    return uploads.lambda_handler(event, FakeContext())


def only_row(aws: dict[str, Any]) -> dict[str, Any]:
    (row,) = rows(aws["table"])
    return row


# -- one upload, one row ------------------------------------------------------------------


def test_an_uploaded_photo_gets_one_row_with_its_category(aws: dict[str, Any]) -> None:
    data = image_bytes(RED, (64, 48))
    event = upload(aws, "uploads/seller 42/red dress (1).jpg", data)
    assert "+" in event["Records"][0]["s3"]["object"]["key"]  # as S3 encodes spaces

    answer = deliver(event)

    row = only_row(aws)
    assert row["photo"] == f"s3://{aws['bucket']}/uploads/seller 42/red dress (1).jpg"
    assert row["key"] == "uploads/seller 42/red dress (1).jpg"
    assert row["status"] == "classified" and row["category"] == "dress"
    assert row["probability"] == max(row["scores"].values())
    assert list(row["scores"]) == list(LABELS)
    assert (row["bytes"], row["width"], row["height"]) == (len(data), 64, 48)
    assert row["model_image_size"] == SIZE and row["model_version"]
    assert row["uploaded_at"] == "1970-01-01T00:00:00.000Z"  # the event's time
    assert row["classified_at"].startswith("20")
    assert answer["photos"] == [
        {
            "key": row["key"],
            "etag": row["etag"],
            "status": "classified",
            "category": "dress",
            "row": "written",
        }
    ]


def test_the_row_holds_what_the_service_answers_for_the_same_photo(
    aws: dict[str, Any], data_dir: Path
) -> None:
    photo = sorted((data_dir / "test" / "pants").glob("*.jpg"))[0]
    data = photo.read_bytes()
    deliver(upload(aws, "uploads/pants.jpg", data))

    direct = handler.lambda_handler({"image": base64.b64encode(data).decode()}, FakeContext())
    row = only_row(aws)
    assert row["category"] == direct["category"]
    assert row["probability"] == direct["probability"]
    assert row["scores"] == direct["scores"]
    assert row["model_version"] == direct["model"]["version"]


def test_the_predict_function_refuses_an_s3_event_and_stores_nothing(aws: dict[str, Any]) -> None:
    event = upload(aws, "uploads/blue.jpg", image_bytes(BLUE))
    answer = handler.lambda_handler(event, FakeContext())

    assert (answer["status"], answer["error"]["code"]) == (400, "wrong_function")
    assert rows(aws["table"]) == []


def test_every_record_of_a_notification_gets_its_row(aws: dict[str, Any]) -> None:
    red = upload(aws, "uploads/a/red.jpg", image_bytes(RED))
    green = upload(aws, "uploads/b/green photo.jpg", image_bytes(GREEN))
    deleted = upload(aws, "uploads/c/gone.jpg", image_bytes(BLUE))
    deleted["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    deliver(many_records(red, green, deleted))

    found = {row["key"]: row["category"] for row in rows(aws["table"])}
    assert found == {"uploads/a/red.jpg": "dress", "uploads/b/green photo.jpg": "hat"}


def test_the_event_file_shapes_are_understood() -> None:
    versioned = uploads.photos_from_notification(aws_local.load_event("s3-put-versioned.json"))
    assert [p.key for p in versioned] == [
        "uploads/seller 42/red dress (1).jpg",
        "uploads/seller 42/blue shoes.jpg",
    ]
    assert versioned[0].version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    batch = uploads.photos_from_batch(aws_local.load_event("backfill-batch.json"))
    assert (batch[0].key, batch[0].etag, batch[0].size) == (
        "catalogue/dress/0001.jpg",
        "05704fbdccb224cb01c59005bebbad28",
        23816,
    )
    assert batch[0].uploaded_at == "2025-12-01T12:05:31+00:00"


def test_a_record_without_an_etag_names_none() -> None:
    event = aws_local.load_event("s3-put-versioned.json")
    del event["Records"][0]["s3"]["object"]["eTag"]
    assert uploads.photos_from_notification(event)[0].etag == ""


def test_a_photo_is_described_by_its_uri_and_version_when_it_has_one() -> None:
    photo = Photo(bucket="shop", key="uploads/red.jpg", etag="abc")
    assert photo.describe() == "s3://shop/uploads/red.jpg"
    versioned = Photo(bucket="shop", key="uploads/red.jpg", etag="abc", version_id="v2")
    assert versioned.describe() == "s3://shop/uploads/red.jpg (version v2)"


def test_s3s_test_event_is_acknowledged_without_a_row(aws: dict[str, Any]) -> None:
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": aws["bucket"]}
    assert uploads.is_s3_notification(event)
    assert deliver(event)["photos"] == []
    assert rows(aws["table"]) == []


def test_an_event_of_another_kind_raises_so_it_reaches_the_failure_queue() -> None:
    with pytest.raises(uploads.BadEventError, match="Expected an S3 event notification"):
        uploads.lambda_handler({"url": "https://example.com/a.jpg"}, FakeContext())


# -- versions and re-uploads ----------------------------------------------------------


def test_a_versioned_event_classifies_the_version_it_names(aws: dict[str, Any]) -> None:
    aws["s3"].put_bucket_versioning(
        Bucket=aws["bucket"], VersioningConfiguration={"Status": "Enabled"}
    )
    first = upload(aws, "uploads/item.jpg", image_bytes(RED))
    second = upload(aws, "uploads/item.jpg", image_bytes(BLUE))  # overwritten before we ran

    deliver(first)
    deliver(second)

    found = sorted((row["category"], row["version_id"]) for row in rows(aws["table"]))
    versions = [e["Records"][0]["s3"]["object"]["versionId"] for e in (first, second)]
    assert found == sorted([("dress", versions[0]), ("longsleeve", versions[1])])


def test_an_overwritten_unversioned_photo_is_superseded_not_misread(aws: dict[str, Any]) -> None:
    first = upload(aws, "uploads/item.jpg", image_bytes(RED))
    upload(aws, "uploads/item.jpg", image_bytes(BLUE))

    deliver(first)

    row = only_row(aws)
    assert (row["status"], row["error_code"]) == ("failed", "superseded")
    assert "category" not in row


def test_a_reupload_with_new_bytes_is_a_new_row_beside_the_old(aws: dict[str, Any]) -> None:
    deliver(upload(aws, "uploads/item.jpg", image_bytes(RED)))
    deliver(upload(aws, "uploads/item.jpg", image_bytes(GREEN)))

    assert sorted(row["category"] for row in rows(aws["table"])) == ["dress", "hat"]


# -- photos that can never be classified: an error row, no raise ---------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"these are not the bytes of an image", "unsupported_image"),
        (image_bytes(RED)[:-50], "corrupt_image"),
        (b"", "empty_image"),
    ],
    ids=["text", "truncated-jpeg", "empty"],
)
def test_a_photo_that_is_not_an_image_gets_an_error_row(
    aws: dict[str, Any], data: bytes, code: str
) -> None:
    answer = deliver(upload(aws, "uploads/broken.jpg", data))

    row = only_row(aws)
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert row["error_message"] and row["bytes"] == len(data)
    assert answer["photos"][0]["error"] == code


def test_a_photo_over_the_byte_cap_gets_an_error_row_unread(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", "2000")
    deliver(upload(aws, "uploads/big.jpg", image_bytes(RED, (400, 400))))

    row = only_row(aws)
    assert (row["status"], row["error_code"]) == ("failed", "image_too_large")
    assert "2,000" in row["error_message"]


def test_a_photo_over_the_pixel_cap_gets_an_error_row(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_PIXELS", "1000")
    deliver(upload(aws, "uploads/wide.jpg", image_bytes(RED, (100, 100))))

    assert only_row(aws)["error_code"] == "image_too_large"


def test_a_photo_deleted_before_it_was_read_gets_a_not_found_row(aws: dict[str, Any]) -> None:
    event = upload(aws, "uploads/gone.jpg", image_bytes(RED))
    aws["s3"].delete_object(Bucket=aws["bucket"], Key="uploads/gone.jpg")

    deliver(event)

    assert only_row(aws)["error_code"] == "not_found"


# -- transient failures raise; a second delivery leaves one row ------------------------


def test_a_throttled_table_write_raises_and_a_redelivery_leaves_one_row(
    aws: dict[str, Any], endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = upload(aws, "uploads/red.jpg", image_bytes(RED))
    with faulty_proxy(endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        aws_local.clear_clients()
        proxy.fault = dynamodb_throttling("PutItem")
        with pytest.raises(TransientError, match="ProvisionedThroughputExceeded"):
            deliver(event)
        assert proxy.faults_sent == 3  # botocore's own retries came first
        assert rows(aws["table"]) == []

        proxy.fault = None  # Lambda's retry, a minute later
        assert deliver(event)["photos"][0]["row"] == "written"
        assert deliver(event)["photos"][0]["row"] == "unchanged"  # a duplicate delivery

    row = only_row(aws)
    assert (row["status"], row["category"]) == ("classified", "dress")


def test_one_throttled_photo_fails_the_event_after_the_others_are_stored(
    aws: dict[str, Any],
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    red = upload(aws, "uploads/red.jpg", image_bytes(RED))
    blue = upload(aws, "uploads/blue.jpg", image_bytes(BLUE))
    throttle = dynamodb_throttling("PutItem")
    with faulty_proxy(endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        aws_local.clear_clients()
        proxy.fault = lambda path, headers, body: (
            throttle(path, headers, body) if b"blue.jpg" in body else None
        )
        with pytest.raises(TransientError, match="1 of 2 photos"):
            deliver(many_records(red, blue))
        (warning,) = [json.loads(r.message) for r in caplog.records if r.levelname == "WARNING"]
        assert warning["stored"] == 1 and "uploads/blue.jpg" in warning["transient"][0]
        assert [row["key"] for row in rows(aws["table"])] == ["uploads/red.jpg"]

        proxy.fault = None
        answer = deliver(many_records(red, blue))

    assert {p["key"]: p["row"] for p in answer["photos"]} == {
        "uploads/red.jpg": "unchanged",  # skipped: its row was already there
        "uploads/blue.jpg": "written",
    }
    assert sorted(row["category"] for row in rows(aws["table"])) == ["dress", "longsleeve"]


def test_a_duplicate_delivery_is_answered_from_the_table_without_reading_the_photo(
    aws: dict[str, Any],
) -> None:
    event = upload(aws, "uploads/red.jpg", image_bytes(RED))
    first = deliver(event)["photos"][0]
    aws["s3"].delete_object(Bucket=aws["bucket"], Key="uploads/red.jpg")

    (again,) = deliver(event)["photos"]

    assert again == {
        "key": "uploads/red.jpg",
        "etag": first["etag"],
        "status": "done",
        "row": "unchanged",
    }


def test_an_s3_outage_raises_and_writes_nothing(
    aws: dict[str, Any], endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = upload(aws, "uploads/red.jpg", image_bytes(RED))
    with faulty_proxy(endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        aws_local.clear_clients()
        proxy.fault = lambda path, headers, body: (
            503,
            {"Content-Type": "application/xml"},
            b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>",
        )
        with pytest.raises(TransientError, match="SlowDown"):
            deliver(event)

    assert rows(aws["table"]) == []


def test_a_missing_table_setting_raises_rather_than_dropping_the_photo(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESULTS_TABLE")
    with pytest.raises(TransientError, match="RESULTS_TABLE"):
        deliver(upload(aws, "uploads/red.jpg", image_bytes(RED)))


def test_a_model_that_does_not_load_raises_so_the_event_is_retried(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "missing.onnx"))
    handler.get_service.cache_clear()
    with pytest.raises(TransientError, match="model could not be loaded"):
        deliver(upload(aws, "uploads/red.jpg", image_bytes(RED)))


def test_the_summary_is_json(aws: dict[str, Any]) -> None:
    answer = deliver(upload(aws, "uploads/red.jpg", image_bytes(RED)))
    assert json.loads(json.dumps(answer)) == answer


def test_an_unexpected_error_while_decoding_is_retried_after_the_others_are_stored(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambda_function import service as service_module

    real_prepare, odd = service_module.prepare, image_bytes(GREEN)

    def prepare(data: bytes, size: int, **limits: Any) -> Any:
        if data == odd:
            raise RuntimeError("a bug, not the photo's fault")
        return real_prepare(data, size, **limits)

    monkeypatch.setattr(service_module, "prepare", prepare)
    red, green = upload(aws, "uploads/red.jpg", image_bytes(RED)), upload(aws, "uploads/g.jpg", odd)

    with pytest.raises(TransientError, match=r"1 of 2 photos.*internal_error"):
        deliver(many_records(red, green))

    assert [row["key"] for row in rows(aws["table"])] == ["uploads/red.jpg"]
