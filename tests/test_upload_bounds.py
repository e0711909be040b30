"""Issue 22: the upload path bounded in memory and time, versions kept straight, hand-made
records refused with a reason, and nothing ever lost, against moto over HTTP.

Each test builds its hostile input here; the tiny model maps red to ``dress`` and blue to
``longsleeve`` (tests.lambda_testing), so a wrong classification is visible in the row.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from examples.shop_backend import latest_suggestion
from lambda_function import handler, uploads
from lambda_function.backfill import UsageError, parse_uri
from lambda_function.failures import TransientError
from lambda_function.model_metadata import ModelMetadata
from tests import aws_local
from tests.aws_local import create_results_table, faulty_proxy, many_records, rows, s3_put_event
from tests.lambda_testing import BLUE, LABELS, RED, FakeContext, build_model, image_bytes

NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with aws_local.moto_endpoint() as url:
        yield url


@pytest.fixture
def aws(
    endpoint: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A fresh versioned bucket and results table; the function's environment on them."""
    name = f"bounds-{next(NUMBERS)}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    create_results_table(name)
    for variable in ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "MAX_IMAGE_BYTES", "DEADLINE_RESERVE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MODEL_PATH", str(tiny_model))
    monkeypatch.setenv("RESULTS_TABLE", name)
    handler.get_service.cache_clear()
    aws_local.clear_clients()
    yield {"s3": s3, "bucket": name, "table": name, "endpoint": endpoint}
    handler.get_service.cache_clear()
    aws_local.clear_clients()


def put(aws: dict[str, Any], key: str, data: bytes, when: str = "") -> dict[str, Any]:
    """Store ``data``; the notification S3 sends for it (``eventTime`` = ``when``)."""
    answer = aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=data)
    event = s3_put_event(
        aws["bucket"], key, answer["ETag"].strip('"'), len(data), answer.get("VersionId", "")
    )
    if when:
        event["Records"][0]["eventTime"] = when
    return event


def deliver(event: dict[str, Any], remaining_ms: int = 20_000) -> dict[str, Any]:
    return uploads.lambda_handler(event, FakeContext(remaining_ms=remaining_ms))


def fresh_service() -> None:
    handler.get_service.cache_clear()


# -- class 1: memory ------------------------------------------------------------------


@contextlib.contextmanager
def s3_that_never_answers(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> Iterator[None]:
    """S3 behind a proxy that never answers for keys containing ``name`` (until the end)."""
    release = threading.Event()

    def hang(path: str, headers: dict[str, str], body: bytes) -> None:
        if name in path:
            release.wait(60)  # S3 does not answer until the test is over
        return None

    with faulty_proxy(aws["endpoint"]) as proxy:
        proxy.fault = hang
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        aws_local.clear_clients()
        try:
            yield
        finally:
            release.set()


def test_chunks_stay_within_the_memory_of_1024_and_3008_mb_whatever_the_batch() -> None:
    from lambda_function.photos import Photo
    from lambda_function.upload_limits import MemoryBudget, chunks

    photos = [Photo("b", f"k{i}.jpg", f"e{i}", size=9_000_000) for i in range(500)]
    for memory_mb in (1024, 3008):
        budget = MemoryBudget.of(memory_mb, 40_000_000)
        parts = list(chunks(photos, budget, 10 * 2**20, 299))
        assert [p for part in parts for p in part] == photos  # all of them, in order
        biggest = max(len(part) for part in parts)
        assert 1 <= biggest < len(photos)
        assert budget.decoding is not None and biggest * 9_000_000 <= budget.decoding


def test_a_backfill_batch_is_classified_in_chunks_that_fit_the_memory(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    data = image_bytes(RED)
    items = []
    for number in range(40):
        key = f"catalogue/{number:02d}.png"
        etag = aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=data)["ETag"]
        # The listing says 9 MB each: the chunks are sized from what the listing says.
        items.append({"Key": key, "Etag": etag, "Size": 9_000_000, "LastModified": 1764590731})
    service = handler.get_service()
    batches: list[int] = []
    predict = service.classifier.predict

    def counted(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return predict(x)

    monkeypatch.setattr(service.classifier, "predict", counted)
    answer = deliver({"BatchInput": {"bucket": aws["bucket"]}, "Items": items})
    assert len(answer["photos"]) == 40 and len(rows(aws["table"])) == 40
    # 1,024 MB less the process (400 MB) and one 40 MP decode (381 MB): ~243 MB of photos
    assert len(batches) > 1 and max(batches) * 9_000_000 <= 243 * 2**20


def test_a_memory_size_that_cannot_hold_one_photo_refuses_the_event(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(1_000_000_000))
    event = put(aws, "uploads/red.png", image_bytes(RED))
    with pytest.raises(TransientError, match="Expected a MemorySize that holds one photo"):
        deliver(event)
    assert rows(aws["table"]) == []


# -- class 2: the deadline --------------------------------------------------------------


def test_a_get_object_that_never_answers_is_retried_after_the_others_are_stored(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEADLINE_RESERVE", "2")
    red = put(aws, "uploads/red.png", image_bytes(RED))
    slow = put(aws, "uploads/slow.png", image_bytes(BLUE))
    expected = r"1 of 2 photos.*slow\.png.*deadline"
    with (
        s3_that_never_answers(aws, monkeypatch, "slow.png"),
        pytest.raises(TransientError, match=expected),
    ):
        deliver(many_records(red, slow), remaining_ms=5_000)
    assert [row["key"] for row in rows(aws["table"])] == ["uploads/red.png"]


def test_photos_the_time_left_cannot_cover_are_retried_not_started(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEADLINE_RESERVE", "2")
    event = put(aws, "uploads/red.png", image_bytes(RED))
    with pytest.raises(TransientError, match=r"not (read|classified) before the invocation"):
        deliver(event, remaining_ms=2_000)  # all of it is the reserve
    assert rows(aws["table"]) == []


# -- class 3: versions and models --------------------------------------------------------


def test_a_photo_reverted_to_an_earlier_version_suggests_that_version(
    aws: dict[str, Any],
) -> None:
    deliver(put(aws, "uploads/p.png", image_bytes(RED), "2026-12-01T10:00:00.000Z"))
    deliver(put(aws, "uploads/p.png", image_bytes(BLUE), "2026-12-01T11:00:00.000Z"))
    deliver(put(aws, "uploads/p.png", image_bytes(RED), "2026-12-01T12:00:00.000Z"))
    suggestion = latest_suggestion(boto3.client("dynamodb"), aws["table"], aws["bucket"],
                                   "uploads/p.png")  # fmt: skip
    assert suggestion is not None and suggestion["category"] == "dress"


def test_an_event_with_one_versions_etag_and_anothers_id_stores_no_classification(
    aws: dict[str, Any],
) -> None:
    red = put(aws, "uploads/p.png", image_bytes(RED))
    blue = put(aws, "uploads/p.png", image_bytes(BLUE))
    forged = json.loads(json.dumps(blue))
    red_version = red["Records"][0]["s3"]["object"]["versionId"]
    forged["Records"][0]["s3"]["object"]["versionId"] = red_version  # blue's eTag, red's id
    answer = deliver(forged)
    assert answer["photos"][0]["error"] == "superseded"
    (row,) = rows(aws["table"])
    assert "category" not in row  # never "dress" under blue's ETag


def test_an_older_model_never_replaces_a_newer_models_row(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def model(name: str, sha: str, created_at: str) -> Path:
        props = ModelMetadata(LABELS, 32, checkpoint_sha256=sha, created_at=created_at)
        return build_model(tmp_path / name, metadata=props.to_props())

    newer = model("newer.onnx", "b" * 64, "2026-12-02T10:00:00+00:00")
    older = model("older.onnx", "a" * 64, "2026-11-01T10:00:00+00:00")
    event = put(aws, "uploads/red.png", image_bytes(RED))
    monkeypatch.setenv("MODEL_PATH", str(newer))
    fresh_service()
    assert deliver(event)["photos"][0]["row"] == "written"
    monkeypatch.setenv("MODEL_PATH", str(older))
    fresh_service()
    deliver(event)
    (row,) = rows(aws["table"])
    assert row["model_version"] == "b" * 12


def test_an_error_row_is_replaced_once_the_limit_is_raised(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = put(aws, "uploads/red.png", image_bytes(RED))
    monkeypatch.setenv("MAX_IMAGE_BYTES", "50")
    fresh_service()
    assert deliver(event)["photos"][0]["error"] == "image_too_large"
    monkeypatch.delenv("MAX_IMAGE_BYTES")
    fresh_service()
    assert deliver(event)["photos"][0]["row"] == "written"
    (row,) = rows(aws["table"])
    assert row["category"] == "dress"


# -- class 6: the configured bucket and prefix --------------------------------------------


def test_a_photo_outside_the_configured_bucket_or_prefix_is_skipped_with_a_reason(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    other = f"{aws['bucket']}-other"
    aws["s3"].create_bucket(Bucket=other)
    etag = aws["s3"].put_object(Bucket=other, Key="uploads/red.png", Body=image_bytes(RED))["ETag"]
    elsewhere = s3_put_event(other, "uploads/red.png", etag.strip('"'), 100)
    outside = put(aws, "private/red.png", image_bytes(RED))
    inside = put(aws, "uploads/red.png", image_bytes(RED))
    monkeypatch.setenv("UPLOADS_BUCKET", aws["bucket"])
    monkeypatch.setenv("UPLOADS_PREFIX", "uploads/")
    answer = deliver(many_records(elsewhere, outside, inside))
    assert [row["photo"] for row in rows(aws["table"])] == [f"s3://{aws['bucket']}/uploads/red.png"]
    assert [skip["key"] for skip in answer["skipped"]] == ["'uploads/red.png'", "'private/red.png'"]
    assert all("this stack's" in skip["reason"] for skip in answer["skipped"])
    assert "private/red.png" in caplog.text


# -- class 7: hand-made records ---------------------------------------------------------


def test_a_record_without_an_etag_gets_the_row_of_the_version_s3_returns(
    aws: dict[str, Any],
) -> None:
    event = put(aws, "uploads/red.png", image_bytes(RED))
    etag = event["Records"][0]["s3"]["object"].pop("eTag")
    answer = deliver(event)
    assert answer["photos"][0]["etag"] == etag
    (row,) = rows(aws["table"])
    assert row["etag"] == etag and row["category"] == "dress"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("key", None, "key as a string"),
        ("key", 5, "key as a string"),
        ("key", "uploads/a%0Ab.png", "control characters"),
        ("size", float("inf"), "Expected a size"),
        ("size", -1, "Expected a size"),
        ("eTag", 7, "eTag as a string"),
    ],
)
def test_a_hand_made_record_is_skipped_with_its_reason(
    aws: dict[str, Any], field: str, value: Any, reason: str
) -> None:
    good = put(aws, "uploads/red.png", image_bytes(RED))
    bad = json.loads(json.dumps(good))
    bad["Records"][0]["s3"]["object"][field] = value
    answer = deliver(many_records(good, bad))
    (skip,) = answer["skipped"]
    assert skip["record"] == "Records[1]" and reason in skip["reason"]
    assert [row["key"] for row in rows(aws["table"])] == ["uploads/red.png"]


def test_an_out_of_range_last_modified_is_skipped_not_an_overflow(aws: dict[str, Any]) -> None:
    batch = {
        "BatchInput": {"bucket": aws["bucket"]},
        "Items": [{"Key": "catalogue/a.png", "Etag": '"abc"', "Size": 9, "LastModified": 1e20}],
    }
    (skip,) = deliver(batch)["skipped"]
    assert "LastModified" in skip["reason"]


@pytest.mark.parametrize("bucket", ["Not_A_Bucket", "a", "x" * 64, "a..b", ""])
def test_a_backfill_batch_of_an_impossible_bucket_is_a_bad_event_not_a_retry(
    aws: dict[str, Any], bucket: str
) -> None:
    batch = {"BatchInput": {"bucket": bucket}, "Items": [{"Key": "a.png", "Etag": "e", "Size": 9}]}
    with pytest.raises(
        uploads.BadEventError, match=r"Expected BatchInput\.bucket as an S3 bucket name"
    ):
        deliver(batch)


@pytest.mark.parametrize(
    "uri", ["s3://shop/cata\tlogue/", "s3://shop/catalogue/\n", "s3://sh\rop/"]
)
def test_a_backfill_uri_with_control_characters_is_refused_not_changed(uri: str) -> None:
    with pytest.raises(UsageError, match="without control characters"):
        parse_uri(uri)


# -- class 8: metrics --------------------------------------------------------------------


def test_each_invocation_emits_its_photos_and_duration_as_metrics(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    deliver(put(aws, "uploads/red.png", image_bytes(RED)))
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line
    ]
    (metrics,) = [d for d in documents if "PhotosClassified" in d]
    names = {m["Name"] for m in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"PhotosClassified", "PhotosFailed", "PhotosSkipped", "PhotosTransient",
            "UploadDuration"} <= names  # fmt: skip
    assert metrics["PhotosClassified"] == 1 and metrics["EventKind"] == "s3"


# -- nothing lost ------------------------------------------------------------------------


def test_every_record_of_a_hostile_batch_ends_as_a_row_a_skip_or_a_retry(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEADLINE_RESERVE", "2")
    monkeypatch.setenv("UPLOADS_BUCKET", aws["bucket"])
    monkeypatch.setenv("UPLOADS_PREFIX", "uploads/")
    events = {
        "good": put(aws, "uploads/good.png", image_bytes(RED)),
        "text": put(aws, "uploads/text.png", b"not an image at all"),
        "gone": put(aws, "uploads/gone.png", image_bytes(BLUE)),
        "slow": put(aws, "uploads/slow.png", image_bytes(BLUE)),
        "private": put(aws, "private/x.png", image_bytes(RED)),
        "no-etag": put(aws, "uploads/no-etag.png", image_bytes(RED)),
        "bad-size": put(aws, "uploads/bad-size.png", image_bytes(RED)),
        "null-key": put(aws, "uploads/null.png", image_bytes(RED)),
        "control": put(aws, "uploads/control.png", image_bytes(RED)),
    }
    aws["s3"].delete_object(
        Bucket=aws["bucket"],
        Key="uploads/gone.png",
        VersionId=events["gone"]["Records"][0]["s3"]["object"]["versionId"],
    )
    del events["no-etag"]["Records"][0]["s3"]["object"]["eTag"]
    events["bad-size"]["Records"][0]["s3"]["object"]["size"] = float("nan")
    events["null-key"]["Records"][0]["s3"]["object"]["key"] = None
    events["control"]["Records"][0]["s3"]["object"]["key"] = "uploads/con%1Btrol.png"
    event = many_records(*events.values())
    with s3_that_never_answers(aws, monkeypatch, "slow.png"), pytest.raises(TransientError):
        deliver(event, remaining_ms=6_000)
    warnings = [
        json.loads(r.message)
        for r in caplog.records
        if r.levelname == "WARNING" and r.name == "lambda_function"
    ]
    skipped = {s["record"] for w in warnings for s in w.get("skipped", [])}
    transient = " ".join(t for w in warnings for t in w.get("transient", []))
    stored = {row["key"]: row for row in rows(aws["table"])}
    skipped_keys = {s["key"] for w in warnings for s in w.get("skipped", [])}
    accounted = []
    for number, (name, record) in enumerate(zip(events, event["Records"], strict=True)):
        key = str(record["s3"]["object"]["key"])
        if (
            f"Records[{number}]" in skipped
            or repr(key) in skipped_keys
            or key in transient
            or key in stored
        ):
            accounted.append(name)
    assert accounted == list(events)  # every record: a row, a skip or a retry
    assert stored["uploads/good.png"]["category"] == "dress"
    assert stored["uploads/no-etag.png"]["category"] == "dress"
    assert stored["uploads/text.png"]["status"] == "failed"
    assert stored["uploads/gone.png"]["error_code"] == "not_found"
    assert "uploads/slow.png" in transient
