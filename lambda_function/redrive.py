"""``python -m lambda_function.redrive QUEUE_URL FUNCTION``: try the failed uploads again.

The upload function's on-failure destination keeps, for each event that still failed
after Lambda's retries, an invocation record: the original event (``requestPayload``),
why it failed (``requestContext.condition``, ``responsePayload.errorType``/``errorMessage``)
and when. Once the cause is fixed (a throttled table, a missing permission), this sends each
original event to the function again, asynchronously, exactly as S3 did, and deletes the
record only when Lambda has accepted the new invocation. ``--dry-run`` lists them instead.
Rows are written conditionally, so a photo that made it after all is not written twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

RECEIVE_BATCH = 10
VISIBILITY_S = 120
"""How long a received record stays hidden while it is redriven (or listed by --dry-run)."""


@dataclass
class Tally:
    redriven: int = 0
    kept: int = 0
    reasons: list[str] = field(default_factory=list)


def redrive(
    queue_url: str,
    function: str,
    *,
    limit: int = 1000,
    dry_run: bool = False,
    sqs: Any = None,
    lambda_client: Any = None,
) -> Tally:
    """Re-invoke up to ``limit`` failed events; what is not an invocation record stays."""
    import boto3

    sqs = sqs or boto3.client("sqs")
    lambda_client = lambda_client or boto3.client("lambda")
    tally = Tally()
    while tally.redriven + tally.kept < limit:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(RECEIVE_BATCH, limit - tally.redriven - tally.kept),
            VisibilityTimeout=VISIBILITY_S,
            WaitTimeSeconds=1,
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            record = _record(message["Body"])
            if record is None or dry_run:
                tally.kept += 1
                tally.reasons.append(describe(record) if record else "not an invocation record")
                continue
            answer = lambda_client.invoke(
                FunctionName=function,
                InvocationType="Event",
                Payload=json.dumps(record["requestPayload"]).encode(),
            )
            if answer.get("StatusCode") == 202:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                tally.redriven += 1
            else:
                tally.kept += 1
                tally.reasons.append(f"Lambda answered {answer.get('StatusCode')}")
    return tally


def describe(record: dict[str, Any]) -> str:
    """One line per failed event: when, why, and the objects it names."""
    context = record.get("requestContext", {})
    response = record.get("responsePayload") or {}
    payload = record.get("requestPayload") or {}
    keys = [r.get("s3", {}).get("object", {}).get("key", "?") for r in payload.get("Records", [])]
    keys += [item.get("Key", "?") for item in payload.get("Items", [])]
    return (
        f"{record.get('timestamp', '?')} {context.get('condition', '?')} after "
        f"{context.get('approximateInvokeCount', '?')} tries: "
        f"{response.get('errorType', '?')}: {str(response.get('errorMessage', ''))[:200]} "
        f"[{', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}]"
    )


def _record(body: str) -> dict[str, Any] | None:
    try:
        record = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("requestPayload"), dict):
        return None
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lambda_function.redrive",
        description="Send the events kept in the upload function's on-failure queue to the "
        "function again (the stack's UploadFailuresQueueUrl and UploadFunctionName outputs).",
    )
    parser.add_argument("queue_url")
    parser.add_argument("function")
    parser.add_argument("--limit", type=int, default=1000, help="records to handle at most")
    parser.add_argument("--dry-run", action="store_true", help="list the records; send nothing")
    args = parser.parse_args(argv)
    tally = redrive(args.queue_url, args.function, limit=args.limit, dry_run=args.dry_run)
    for reason in tally.reasons:
        print(reason)
    verb = "listed" if args.dry_run else "kept"
    print(f"{tally.redriven} events sent again; {tally.kept} {verb}.")
    return 0 if args.dry_run or tally.kept == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
