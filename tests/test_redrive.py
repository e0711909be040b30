"""Redriving the on-failure queue: moto's SQS, and a stand-in for Lambda's Invoke API.

The stand-in answers ``POST /2015-03-31/functions/NAME/invocations`` as Lambda does for an
asynchronous invocation (202) and then runs the upload handler on the payload, so a
redriven event really ends as a row.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambda_function import handler, redrive, uploads
from tests import aws_local
from tests.lambda_testing import RED, FakeContext, image_bytes, load_event

BUCKET, TABLE, FUNCTION = "redrive-uploads", "redrive-results", "fashion-upload"


class _LambdaInvokeApi(BaseHTTPRequestHandler):
    """Lambda's Invoke API for ``InvocationType=Event``: accept, then run the handler."""

    server: Any

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.invocations.append(
            (self.path, self.headers.get("X-Amz-Invocation-Type"), payload)
        )
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        try:
            uploads.lambda_handler(payload, FakeContext())
        finally:
            self.server.handled.release()  # the invocation has run (as Lambda's would, later)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def aws(tiny_model: Path) -> Iterator[dict[str, Any]]:
    lambda_api = ThreadingHTTPServer(("127.0.0.1", 0), _LambdaInvokeApi)
    lambda_api.invocations = []  # type: ignore[attr-defined]
    lambda_api.handled = threading.Semaphore(0)  # type: ignore[attr-defined]
    threading.Thread(target=lambda_api.serve_forever, args=(0.02,), daemon=True).start()
    with aws_local.moto_endpoint(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(tiny_model))
        patch.setenv("RESULTS_TABLE", TABLE)
        patch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{lambda_api.server_address[1]}")
        handler.get_service.cache_clear()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        aws_local.create_results_table(TABLE)
        yield {"sqs": boto3.client("sqs"), "lambda_api": lambda_api}
        handler.get_service.cache_clear()
    lambda_api.shutdown()
    lambda_api.server_close()


@pytest.fixture
def queue(aws: dict[str, Any], request: pytest.FixtureRequest) -> str:
    return str(aws["sqs"].create_queue(QueueName=f"failures-{request.node.name[:60]}")["QueueUrl"])


def failed_upload(key: str) -> dict[str, Any]:
    """The invocation record Lambda keeps for an S3 event that failed after its retries."""
    data = image_bytes(RED)
    etag = boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
    record = copy.deepcopy(load_event("upload-failure-record.json"))
    record["requestPayload"] = aws_local.s3_put_event(BUCKET, key, etag.strip('"'), len(data))
    return record


def test_a_redriven_event_is_invoked_again_stored_and_removed_from_the_queue(
    aws: dict[str, Any], queue: str
) -> None:
    for key in ("uploads/one.jpg", "uploads/two.jpg"):
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(failed_upload(key)))

    tally = redrive.redrive(queue, FUNCTION)

    assert (tally.redriven, tally.kept) == (2, 0)
    # Lambda answers an asynchronous invocation before it runs: wait for both runs to end.
    assert all(aws["lambda_api"].handled.acquire(timeout=60) for _ in range(2))
    calls = aws["lambda_api"].invocations[-2:]
    assert {path for path, _, _ in calls} == {f"/2015-03-31/functions/{FUNCTION}/invocations"}
    assert {kind for _, kind, _ in calls} == {"Event"}
    assert sorted(row["key"] for row in aws_local.rows(TABLE)) == [
        "uploads/one.jpg",
        "uploads/two.jpg",
    ]
    assert "Messages" not in aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=0)


def test_a_dry_run_lists_why_each_event_failed_and_sends_nothing(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws["sqs"].send_message(
        QueueUrl=queue, MessageBody=json.dumps(failed_upload("uploads/three.jpg"))
    )
    before = len(aws["lambda_api"].invocations)

    assert redrive.main([queue, FUNCTION, "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "RetriesExhausted after 3 tries: TransientError" in out
    assert "uploads/three.jpg" in out and "0 events sent again; 1 listed." in out
    assert len(aws["lambda_api"].invocations) == before


def test_a_message_that_is_no_invocation_record_stays_in_the_queue(
    aws: dict[str, Any], queue: str
) -> None:
    aws["sqs"].send_message(QueueUrl=queue, MessageBody="hello")

    tally = redrive.redrive(queue, FUNCTION, limit=5)

    assert (tally.redriven, tally.kept, tally.reasons) == (0, 1, ["not an invocation record"])


def test_the_record_file_is_what_lambda_destinations_send() -> None:
    record = load_event("upload-failure-record.json")
    assert set(record) == {
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    }
    assert uploads.is_s3_notification(record["requestPayload"])


def test_a_failed_event_is_described_by_its_error_and_every_object_it_names() -> None:
    record = copy.deepcopy(load_event("upload-failure-record.json"))
    record["requestPayload"]["Records"].append({"s3": {"bucket": {"name": BUCKET}}})
    record["requestPayload"]["Items"] = [{"Key": "catalogue/hat.jpg"}, {"Size": 3}]

    line = redrive.describe(record)

    assert line.startswith("2026-12-01T14:11:05.568Z RetriesExhausted after 3 tries: ")
    assert "TransientError: 1 of 1 photos failed transiently" in line
    assert line.endswith("[uploads/seller-42/photo.jpg, ?, catalogue/hat.jpg, ?]")


def test_a_redrive_that_keeps_records_says_so_and_fails(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws["sqs"].send_message(QueueUrl=queue, MessageBody="hello")

    assert redrive.main([queue, FUNCTION]) == 1

    assert capsys.readouterr().out.splitlines() == [
        "not an invocation record",
        "0 events sent again; 1 kept.",
    ]
