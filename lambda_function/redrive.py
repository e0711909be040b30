"""``python -m lambda_function.redrive QUEUE_URL FUNCTION``: try the failed uploads again.

The upload function's on-failure destination keeps, for each event that still failed
after Lambda's retries, an invocation record: the original event (``requestPayload``),
why it failed (``requestContext.condition``, ``responsePayload.errorType``/``errorMessage``)
and when. Once the cause is fixed (a throttled table, a missing permission), this sends each
original event to the upload function again, asynchronously, exactly as S3 did, and deletes
the record only when Lambda has accepted the new invocation. ``--dry-run`` lists them and
leaves every one visible. Rows are written conditionally, so a photo that made it after all
is not written twice.

Nothing is lost on the way: a record that cannot be read, that Lambda refuses (throttled,
too large, a service error) or that has already been redriven ``--max-redrives`` times stays
in the queue, visible again when the run ends, and the run exits non-zero with one line per
such record. The count travels in the event itself (:data:`COUNT_FIELD`), because each new
failure is a new message.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from lambda_function import uploads

RECEIVE_BATCH = 10
VISIBILITY_S = 120
"""How long a received record stays hidden while the run handles it; kept ones are made
visible again when the run ends."""
UPLOAD_HANDLER = "lambda_function.uploads.lambda_handler"
TABLE_VARIABLE = "RESULTS_TABLE"
COUNT_FIELD = "redriveCount"
"""Top-level field of a redriven event: how many times it has been redriven."""
DEFAULT_MAX_REDRIVES = 3
MAX_REASON_CHARS = 2000


class WrongFunctionError(ValueError):
    """The named function is not the upload function: it would lose what it is sent."""


@dataclass
class Tally:
    redriven: int = 0
    kept: int = 0
    failed: int = 0
    """Kept because a record could not be read or Lambda refused it."""
    given_up: int = 0
    """Kept because it has been redriven the maximum number of times already."""
    reasons: list[str] = field(default_factory=list)

    def keep(self, reason: str) -> None:
        self.kept += 1
        self.reasons.append(reason[:MAX_REASON_CHARS])


def redrive(
    queue_url: str,
    function: str,
    *,
    limit: int = 1000,
    dry_run: bool = False,
    max_redrives: int = DEFAULT_MAX_REDRIVES,
    sqs: Any = None,
    lambda_client: Any = None,
) -> Tally:
    """Re-invoke up to ``limit`` failed events; whatever is not redriven stays, visible."""
    sqs = sqs or _client("sqs")
    lambda_client = lambda_client or _client("lambda")
    check_upload_function(lambda_client, function)
    tally = Tally()
    seen: set[str] = set()
    hidden: list[str] = []  # receipt handles of kept messages, made visible at the end
    try:
        while tally.redriven + tally.kept < limit:
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(RECEIVE_BATCH, limit - tally.redriven - tally.kept),
                VisibilityTimeout=VISIBILITY_S,
                WaitTimeSeconds=1,
            ).get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            hidden += [m["ReceiptHandle"] for m in messages if m["MessageId"] in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                if not _handle(message, function, tally, dry_run, max_redrives, lambda_client):
                    hidden.append(message["ReceiptHandle"])
                    continue
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    finally:
        _show_again(sqs, queue_url, hidden)
    return tally


def _show_again(sqs: Any, queue_url: str, handles: list[str]) -> None:
    """Make kept messages visible now (at worst they reappear after ``VISIBILITY_S``)."""
    for handle in handles:
        try:
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
        except Exception:  # noqa: BLE001 - an expired handle: it is visible already
            continue


def check_upload_function(lambda_client: Any, function: str) -> None:
    """Refuse ``function`` unless it runs the upload handler with a results table."""
    config = lambda_client.get_function_configuration(FunctionName=function)
    image = (config.get("ImageConfigResponse") or {}).get("ImageConfig") or {}
    handler = " ".join(image.get("Command") or []) or config.get("Handler", "")
    variables = (config.get("Environment") or {}).get("Variables") or {}
    if handler != UPLOAD_HANDLER or not variables.get(TABLE_VARIABLE):
        raise WrongFunctionError(
            f"Expected the upload function (handler {UPLOAD_HANDLER}, {TABLE_VARIABLE} set: "
            f"the stack's UploadFunctionName output). Received: {function}, with handler "
            f"{handler or '(none)'!r} and {TABLE_VARIABLE} "
            f"{'set' if variables.get(TABLE_VARIABLE) else 'unset'}. Nothing was sent."
        )


def _handle(
    message: dict[str, Any],
    function: str,
    tally: Tally,
    dry_run: bool,
    max_redrives: int,
    lambda_client: Any,
) -> bool:
    """Redrive one message; whether it may be deleted. Every failure is counted and kept."""
    try:
        record = _record(message["Body"])
        if record is None:
            tally.failed += 1
            tally.keep("not an invocation record")
            return False
        payload = record["requestPayload"]
        if not (uploads.is_s3_notification(payload) or uploads.is_backfill_batch(payload)):
            tally.failed += 1
            tally.keep(f"not an upload or backfill event: {describe(record)}")
            return False
        count = _count(payload)
        if dry_run:
            tally.keep(f"{describe(record)} (redriven {count} times)")
            return False
        if count >= max_redrives:
            tally.given_up += 1
            tally.keep(f"given up after {count} redrives: {describe(record)}")
            return False
        answer = lambda_client.invoke(
            FunctionName=function,
            InvocationType="Event",
            Payload=json.dumps({**payload, COUNT_FIELD: count + 1}).encode(),
        )
    except Exception as exc:  # noqa: BLE001 - one message never ends the run
        tally.failed += 1
        tally.keep(f"kept, not sent: {_why(exc)}")
        return False
    if answer.get("StatusCode") != 202:
        tally.failed += 1
        tally.keep(f"kept: Lambda answered {answer.get('StatusCode')}")
        return False
    tally.redriven += 1
    return True


def describe(record: dict[str, Any]) -> str:
    """One line per failed event: when, why, and the objects it names."""
    context = _dict(record.get("requestContext"))
    response = _dict(record.get("responsePayload"))
    payload = _dict(record.get("requestPayload"))
    keys = [
        str(_dict(_dict(_dict(r).get("s3")).get("object")).get("key", "?"))[:200]
        for r in _list(payload.get("Records"))
    ]
    keys += [str(_dict(item).get("Key", "?"))[:200] for item in _list(payload.get("Items"))]
    return (
        f"{str(record.get('timestamp', '?'))[:40]} {str(context.get('condition', '?'))[:40]} "
        f"after {str(context.get('approximateInvokeCount', '?'))[:10]} tries: "
        f"{str(response.get('errorType', '?'))[:80]}: "
        f"{str(response.get('errorMessage', ''))[:200]} "
        f"[{', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}]"
    )


def _record(body: str) -> dict[str, Any] | None:
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
        return None
    if not isinstance(record, dict) or not isinstance(record.get("requestPayload"), dict):
        return None
    return record


def _count(payload: dict[str, Any]) -> int:
    """How many times this event has been redriven (what an earlier run wrote into it)."""
    count = payload.get(COUNT_FIELD, 0)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def _why(exc: Exception) -> str:
    """An error in one line: AWS's code and HTTP status when it is a ClientError."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{status} {error.get('Code', '?')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _client(service: str) -> Any:
    """A boto3 client that retries throttling and 5xx a little, then lets the run go on."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(retries={"mode": "standard", "max_attempts": 3}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lambda_function.redrive",
        description="Send the events kept in the upload function's on-failure queue to the "
        "function again (the stack's UploadFailuresQueueUrl and UploadFunctionName outputs).",
    )
    parser.add_argument("queue_url")
    parser.add_argument("function", help="the upload function (refused if it is another)")
    parser.add_argument("--limit", type=int, default=1000, help="records to handle at most")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the records; send nothing, hide nothing"
    )
    parser.add_argument(
        "--max-redrives",
        type=int,
        default=DEFAULT_MAX_REDRIVES,
        help="keep (and report) an event already redriven this many times (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.limit < 1 or args.max_redrives < 1:
        parser.error(
            f"Expected --limit and --max-redrives of at least 1. "
            f"Received: {args.limit} and {args.max_redrives}"
        )
    try:
        tally = redrive(
            args.queue_url,
            args.function,
            limit=args.limit,
            dry_run=args.dry_run,
            max_redrives=args.max_redrives,
        )
    except WrongFunctionError as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the queue or the function cannot be reached
        print(
            f"The redrive stopped; what it did not send stays queued: {_why(exc)}", file=sys.stderr
        )
        return 2
    for reason in tally.reasons:
        print(reason)
    verb = "listed" if args.dry_run else "kept"
    print(f"{tally.redriven} events sent again; {tally.kept} {verb}.")
    if tally.failed or tally.given_up:
        print(
            f"{tally.failed} could not be sent, {tally.given_up} given up after "
            f"{args.max_redrives} redrives; they stay in the queue."
        )
    return 0 if args.dry_run or tally.kept == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
