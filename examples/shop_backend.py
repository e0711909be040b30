"""How the shop's backend uses the classifier: upload now and read the suggestion later,
or ask and wait (boto3 and the standard library only; docs/upload.md).

Asynchronous, the seller's upload: put the photo into the uploads bucket, keep its ETag,
read the row when the listing form needs it (a second or two later)::

    etag = upload_photo(s3, bucket, "uploads/seller-42/listing-7.jpg", data)
    suggestion = wait_for_suggestion(dynamodb, table, bucket, key, etag)

Synchronous, today's path: POST the bytes to the API and wait for the answer::

    answer = classify_now("https://<api-id>.execute-api.<region>.amazonaws.com/predict", data)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def upload_photo(
    s3: Any, bucket: str, key: str, data: bytes, content_type: str = "image/jpeg"
) -> str:
    """Store the photo where the upload trigger sees it; its ETag names the result row."""
    answer = s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    return str(answer["ETag"]).strip('"')


def read_suggestion(
    dynamodb: Any, table: str, bucket: str, key: str, etag: str
) -> dict[str, Any] | None:
    """The row of this upload: a suggestion, an error, or None while it is being classified."""
    item = dynamodb.get_item(
        TableName=table,
        Key={"photo": {"S": f"s3://{bucket}/{key}"}, "etag": {"S": etag}},
        ConsistentRead=True,
    ).get("Item")
    return None if item is None else _suggestion(item)


def wait_for_suggestion(
    dynamodb: Any,
    table: str,
    bucket: str,
    key: str,
    etag: str,
    timeout_s: float = 30.0,
    poll_s: float = 0.5,
) -> dict[str, Any] | None:
    """Poll :func:`read_suggestion` until the row is there or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = read_suggestion(dynamodb, table, bucket, key, etag)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(poll_s)


def latest_suggestion(dynamodb: Any, table: str, bucket: str, key: str) -> dict[str, Any] | None:
    """The newest upload's row for ``key``, when the ETag was not kept."""
    answer = dynamodb.query(
        TableName=table,
        KeyConditionExpression="photo = :photo",
        ExpressionAttributeValues={":photo": {"S": f"s3://{bucket}/{key}"}},
    )
    items = sorted(answer["Items"], key=lambda item: item.get("uploaded_at", {}).get("S", ""))
    return _suggestion(items[-1]) if items else None


def classify_now(
    predict_url: str, data: bytes, content_type: str = "image/jpeg", timeout_s: float = 30.0
) -> dict[str, Any]:
    """The synchronous API: the answer, or its error body (``{"error": {"code", ...}}``)."""
    request = urllib.request.Request(
        predict_url, data=data, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        return {**json.loads(error.read()), "status": error.code}


def _suggestion(item: dict[str, Any]) -> dict[str, Any]:
    if item["status"]["S"] == "failed":
        return {"error": item["error_code"]["S"], "message": item["error_message"]["S"]}
    return {
        "category": item["category"]["S"],
        "probability": float(item["probability"]["N"]),
        "scores": {label: float(v["N"]) for label, v in item["scores"]["M"].items()},
        "model_version": item["model_version"]["S"],
    }
