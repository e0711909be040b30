"""API answers the seller can confirm or override later: each gets a ``suggestion_id``.

When ``FEEDBACK_TABLE`` is set (template.yaml sets it on the predict function), every
successful prediction of an API answer is stored in the feedback table under a
``suggestion_id`` (the request id, ``-<i>`` appended for the i-th URL of a batch), and the
answer carries that id; POST /feedback (:mod:`lambda_function.feedback`) then names it.
A stored suggestion expires after :data:`TTL_DAYS` unless feedback arrives (the feedback
removes the expiry). A failed write costs the answer nothing but its ids: a prediction
whose suggestion could not be stored carries no ``suggestion_id`` (so no id is ever
answered that feedback would not find), and the log line says how many were lost.

Only an ``s3://`` URL is kept with the suggestion (so the field export can read the photo);
an https URL may carry a presigned signature in its query, so it is never stored.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from lambda_function import answer_metrics, aws, results

TABLE_VARIABLE = "FEEDBACK_TABLE"
TTL_DAYS = 90
WRITE_BATCH = 25
"""DynamoDB's BatchWriteItem limit."""

logger = logging.getLogger("lambda_function")


def table_name() -> str:
    """The feedback table, or "" where suggestions are not recorded (local runs, tests)."""
    return os.environ.get(TABLE_VARIABLE, "")


def suggestion_ids(request_id: str, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(suggestion_id, prediction)`` for each successful prediction of ``payload``."""
    if "results" in payload:
        return [
            (f"{request_id}-{i}", r)
            for i, r in enumerate(payload["results"])
            if isinstance(r, dict) and "category" in r
        ]
    return [(request_id, payload)] if "category" in payload else []


def item(
    suggestion_id: str, prediction: dict[str, Any], url: str = "", now: float | None = None
) -> dict[str, Any]:
    """The suggestion's row in the feedback table (DynamoDB attribute values)."""
    now = time.time() if now is None else now
    row: dict[str, Any] = {
        "suggestion_id": suggestion_id,
        "kind": "api",
        "model_version": str(prediction.get("model", {}).get("version") or "unknown"),
        "category": prediction["category"],
        "probability": prediction["probability"],
        "confident": bool(prediction.get("confident")),
        "scores": prediction["scores"],
        "suggested_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "expires_at": int(now + TTL_DAYS * 86400),
    }
    if answer_metrics.OUT_OF_CATALOGUE in prediction:
        row["out_of_catalogue"] = bool(prediction[answer_metrics.OUT_OF_CATALOGUE])
    if url.lower().startswith("s3://") and "?" not in url:
        row["photo"] = url
    return {name: results.to_attribute(value) for name, value in row.items()}


def record(
    request_id: str,
    payload: dict[str, Any],
    urls: list[str],
    table: str,
    client: Any = None,
) -> dict[str, Any]:
    """Store the payload's suggestions and return the payload with their ids added.

    ``urls``: the request's URL per item ("" for image bytes), to keep an ``s3://`` one."""
    from botocore.exceptions import BotoCoreError, ClientError

    pending = suggestion_ids(request_id, payload)
    rows = {}
    for sid, prediction in pending:
        url = prediction.get("url", "") if "results" in payload else (urls or [""])[0]
        rows[sid] = item(sid, prediction, url if isinstance(url, str) else "")
    stored: set[str] = set()
    names = list(rows)
    for start in range(0, len(names), WRITE_BATCH):
        chunk = names[start : start + WRITE_BATCH]
        request = {table: [{"PutRequest": {"Item": rows[sid]}} for sid in chunk]}
        try:
            answer = (client or dynamodb_client()).batch_write_item(RequestItems=request)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("suggestions not stored (%d): %s", len(chunk), exc)
            continue
        unprocessed = answer.get("UnprocessedItems", {}).get(table, [])
        lost = {r["PutRequest"]["Item"]["suggestion_id"]["S"] for r in unprocessed}
        if lost:
            logger.warning("suggestions not stored (%d): unprocessed", len(lost))
        stored |= set(chunk) - lost
    return with_ids(payload, request_id, stored)


def answered(request_id: str, payload: dict[str, Any], urls: list[str], source: str) -> dict:
    """The predict function's hook on a successful answer: its answer-distribution metrics,
    and its suggestions stored (ids added) when the feedback table is set."""
    answer_metrics.emit(answer_metrics.predictions(payload), source)
    table = table_name()
    return record(request_id, payload, urls, table) if table else payload


def with_ids(payload: dict[str, Any], request_id: str, stored: set[str]) -> dict[str, Any]:
    """``payload`` with ``suggestion_id`` on each prediction whose suggestion is stored."""
    if "results" in payload:
        results_ = [
            {**r, "suggestion_id": f"{request_id}-{i}"}
            if f"{request_id}-{i}" in stored and "category" in r
            else r
            for i, r in enumerate(payload["results"])
        ]
        return {**payload, "results": results_}
    return {**payload, "suggestion_id": request_id} if request_id in stored else payload


@functools.cache
def dynamodb_client() -> Any:
    """The suggestions' client: it writes on the answer's path, so a slow table costs an
    answer at most about 4 s (2 attempts of 1 s to connect and 1 s to read), far inside the
    function's 25 s (the results table's client allows 3 attempts of 3 + 5 s)."""
    return aws.client("dynamodb", connect_timeout_s=1, read_timeout_s=1, attempts=2, pool=16)
