"""Redriving the on-failure queue: moto's SQS and Lambda, behind a proxy that plays Invoke.

moto holds the functions (their configuration is what the redrive checks). The proxy in
front of it answers ``POST /2015-03-31/functions/NAME/invocations`` as Lambda does for an
asynchronous invocation (202) and then runs the upload handler on the payload, so a
redriven event really ends as a row; or it answers as a throttled, failing or overloaded
Lambda (429, 500, 413) when a test says so.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambda_function import handler, redrive, uploads
from tests import aws_local
from tests.lambda_testing import RED, FakeContext, image_bytes, load_event

BUCKET, TABLE = "redrive-uploads", "redrive-results"
FUNCTION, PREDICT = "fashion-upload", "fashion-predict"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fashion:1"
LAMBDA_ERRORS = {
    429: "TooManyRequestsException",
    500: "ServiceException",
    413: "RequestEntityTooLargeException",
}


class InvokeApi:
    """The proxy's answer to ``Invoke``: 202 and a run of the upload handler, or an error."""

    def __init__(self) -> None:
        self.invocations: list[tuple[str, str | None, dict[str, Any]]] = []
        self.handled = threading.Semaphore(0)
        self.refuse: dict[str, int] = {}
        """Key of a photo -> the status Lambda answers for an event naming it."""

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        if not path.endswith("/invocations"):
            return None  # everything else is moto's
        payload = json.loads(body)
        for key, status in self.refuse.items():
            if key in body.decode():
                error = {"Type": "User", "message": f"refused with {status}"}
                kind = LAMBDA_ERRORS[status]
                return status, {"X-Amzn-ErrorType": kind}, json.dumps(error).encode()
        self.invocations.append((path, headers.get("X-Amz-Invocation-Type"), payload))
        threading.Thread(target=self._run, args=(payload,), daemon=True).start()
        return 202, {}, b""

    def _run(self, payload: dict[str, Any]) -> None:
        try:
            uploads.lambda_handler(payload, FakeContext())
        finally:
            self.handled.release()  # the invocation has run (as Lambda's would, later)


def create_function(name: str, command: str, variables: dict[str, str]) -> None:
    role = boto3.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")
    boto3.client("lambda").create_function(
        FunctionName=name,
        Role=role["Role"]["Arn"],
        PackageType="Image",
        Code={"ImageUri": IMAGE},
        ImageConfig={"Command": [command]},
        Environment={"Variables": variables},
    )


@pytest.fixture(scope="module")
def aws(tiny_model: Path) -> Iterator[dict[str, Any]]:
    invoke_api = InvokeApi()
    with (
        aws_local.moto_endpoint() as endpoint,
        aws_local.faulty_proxy(endpoint) as proxy,
        pytest.MonkeyPatch.context() as patch,
    ):
        proxy.fault = invoke_api
        patch.setenv("MODEL_PATH", str(tiny_model))
        patch.setenv("RESULTS_TABLE", TABLE)
        patch.setenv("AWS_ENDPOINT_URL_LAMBDA", proxy.url)
        handler.get_service.cache_clear()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        aws_local.create_results_table(TABLE)
        create_function(FUNCTION, redrive.UPLOAD_HANDLER, {"RESULTS_TABLE": TABLE})
        create_function(PREDICT, "lambda_function.lambda_handler", {"MAX_BATCH": "8"})
        yield {"sqs": boto3.client("sqs"), "lambda_api": invoke_api}
        handler.get_service.cache_clear()


@pytest.fixture
def queue(aws: dict[str, Any], request: pytest.FixtureRequest) -> str:
    return str(
        aws["sqs"].create_queue(
            QueueName=f"failures-{request.node.name[:60]}".replace("[", "-").replace("]", "")
        )["QueueUrl"]
    )


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
        "1 could not be sent, 0 given up after 3 redrives; they stay in the queue.",
    ]


def visible(aws: dict[str, Any], queue: str) -> list[str]:
    """The bodies a receive sees now (peeked: they stay visible)."""
    answer = aws["sqs"].receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
    )
    return [message["Body"] for message in answer.get("Messages", [])]


def test_a_dry_run_leaves_every_record_visible_for_the_run_that_follows(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(failed_upload("uploads/d.jpg")))

    assert redrive.main([queue, FUNCTION, "--dry-run"]) == 0
    assert len(visible(aws, queue)) == 1
    assert redrive.main([queue, FUNCTION]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == "1 events sent again; 0 kept."
    assert aws["lambda_api"].handled.acquire(timeout=60)
    assert visible(aws, queue) == []


def test_a_function_that_is_not_the_upload_function_is_refused_and_nothing_is_sent(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(failed_upload("uploads/e.jpg")))
    before = len(aws["lambda_api"].invocations)

    assert redrive.main([queue, PREDICT]) == 2

    err = capsys.readouterr().err
    assert "Expected the upload function" in err and f"Received: {PREDICT}" in err
    assert "'lambda_function.lambda_handler'" in err and "RESULTS_TABLE unset" in err
    assert len(aws["lambda_api"].invocations) == before
    assert len(visible(aws, queue)) == 1


def test_a_missing_function_is_a_clear_error_not_a_traceback(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert redrive.main([queue, "no-such-function"]) == 2
    assert "404 ResourceNotFoundException" in capsys.readouterr().err


def test_a_malformed_message_is_counted_and_kept_and_the_run_goes_on(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    odd = json.dumps({"requestPayload": {"Records": "x", "Items": [1]}, "requestContext": 7})
    for body in (deep, odd, json.dumps(failed_upload("uploads/f.jpg"))):
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=body)

    assert redrive.main([queue, FUNCTION]) == 1

    out = capsys.readouterr().out
    assert "not an invocation record" in out and "not an upload or backfill event" in out
    assert "1 events sent again; 2 kept." in out
    assert aws["lambda_api"].handled.acquire(timeout=60)
    assert sorted(len(body) for body in visible(aws, queue)) == sorted([len(odd), len(deep)])


@pytest.mark.parametrize("status", sorted(LAMBDA_ERRORS))
def test_a_lambda_error_keeps_that_record_and_the_run_goes_on(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    refused_key, sent_key = f"uploads/refused-{status}.jpg", f"uploads/sent-{status}.jpg"
    aws["lambda_api"].refuse[refused_key] = status
    for key in (refused_key, sent_key):
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(failed_upload(key)))
    try:
        assert redrive.main([queue, FUNCTION]) == 1
    finally:
        del aws["lambda_api"].refuse[refused_key]

    out = capsys.readouterr().out
    assert f"kept, not sent: {status} {LAMBDA_ERRORS[status]}" in out
    assert "1 events sent again; 1 kept." in out
    assert aws["lambda_api"].handled.acquire(timeout=60)
    (left,) = visible(aws, queue)
    assert refused_key in left


def test_a_redriven_event_carries_its_count_and_is_given_up_at_the_limit(
    aws: dict[str, Any], queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record = failed_upload("uploads/always-fails.jpg")
    aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(record))
    assert redrive.main([queue, FUNCTION, "--max-redrives", "2"]) == 0
    assert aws["lambda_api"].handled.acquire(timeout=60)
    sent = aws["lambda_api"].invocations[-1][2]
    assert sent[redrive.COUNT_FIELD] == 1
    # It fails again: Lambda keeps a new record whose payload is what was sent.
    for count in (1, 2):
        again = {**record, "requestPayload": {**sent, redrive.COUNT_FIELD: count}}
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(again))
    before = len(aws["lambda_api"].invocations)

    assert redrive.main([queue, FUNCTION, "--max-redrives", "2"]) == 1

    out = capsys.readouterr().out
    assert "given up after 2 redrives: " in out and "uploads/always-fails.jpg" in out
    assert "0 could not be sent, 1 given up after 2 redrives; they stay in the queue." in out
    assert aws["lambda_api"].handled.acquire(timeout=60)
    assert aws["lambda_api"].invocations[before][2][redrive.COUNT_FIELD] == 2
    assert len(aws["lambda_api"].invocations) == before + 1
    assert len(visible(aws, queue)) == 1
