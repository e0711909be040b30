"""The results table: one row per photo version, written once per model version.

Key: ``photo`` (``s3://bucket/key``, partition) + ``etag`` (sort). A re-upload of the
same key with new bytes has a new ETag, so it gets a new row beside the old one; the
same bytes uploaded again are the same row. The write is conditional: it happens only
when there is no row yet, or the row came from another model version. So the same
version processed twice (a retried event, a redriven message, a backfill over photos the
trigger already saw) leaves one correct row, and a backfill with a new model replaces
the old model's answers.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lambda_function import aws
from lambda_function.failures import PermanentError, TransientError, aws_error_code
from lambda_function.photos import Photo

TABLE_VARIABLE = "RESULTS_TABLE"
CLASSIFIED, FAILED = "classified", "failed"
WRITTEN, UNCHANGED = "written", "unchanged"
BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class Outcome:
    """What became of one photo: the service's answer, or the permanent failure."""

    photo: Photo
    answer: dict[str, Any] | None = None
    failure: PermanentError | None = None
    image: dict[str, int] = field(default_factory=dict)
    """``bytes``, ``width`` and ``height`` of the photo, as far as they are known."""

    @property
    def status(self) -> str:
        return CLASSIFIED if self.answer is not None else FAILED

    def summary(self) -> dict[str, Any]:
        """The few fields a batch's answer lists per photo (the row has everything)."""
        head = {"key": self.photo.key, "etag": self.photo.etag, "status": self.status}
        if self.answer is not None:
            return {**head, "category": self.answer["category"]}
        assert self.failure is not None
        return {**head, "error": self.failure.code}


def table_name() -> str:
    """The table from ``RESULTS_TABLE``; a clear error for a function not set up for S3."""
    name = os.environ.get(TABLE_VARIABLE, "")
    if not name:
        raise TransientError(
            f"Expected {TABLE_VARIABLE} to name the results table (template.yaml sets it on "
            "the upload function). Received: nothing. The event is retried, then kept in the "
            "on-failure queue."
        )
    return name


def row(outcome: Outcome, model_version: str, now: datetime | None = None) -> dict[str, Any]:
    """The item to store, in DynamoDB's attribute-value form."""
    photo = outcome.photo
    item: dict[str, Any] = {
        "photo": photo.uri,
        "etag": photo.etag,
        "bucket": photo.bucket,
        "key": photo.key,
        "version_id": photo.version_id,
        "source": photo.source,
        "status": outcome.status,
        "model_version": model_version,
        "uploaded_at": photo.uploaded_at,
        "classified_at": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        **outcome.image,
    }
    if outcome.answer is not None:
        answer = outcome.answer
        item |= {
            "category": answer["category"],
            "probability": answer["probability"],
            "scores": answer["scores"],
            "model_image_size": answer["model"]["image_size"],
        }
        item |= answer_fields(answer)
    elif outcome.failure is not None:
        item |= {"error_code": outcome.failure.code, "error_message": outcome.failure.message}
    return {name: to_attribute(value) for name, value in item.items() if value != ""}


def answer_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer's flags that feedback and drift read: ``confident``, ``out_of_catalogue``."""
    return {
        name: bool(answer[name]) for name in ("confident", "out_of_catalogue") if name in answer
    }


def put(outcome: Outcome, model_version: str, table: str, client: Any = None) -> str:
    """Store ``outcome`` unless this version already has this model's row: ``written`` or
    ``unchanged``. Any other failure of the write is transient."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        (client or dynamodb_client()).put_item(
            TableName=table,
            Item=row(outcome, model_version),
            ConditionExpression="attribute_not_exists(photo) OR model_version <> :model",
            ExpressionAttributeValues={":model": {"S": model_version}},
        )
    except ClientError as exc:
        if aws_error_code(exc) == "ConditionalCheckFailedException":
            return UNCHANGED
        raise _write_failed(outcome, exc) from exc
    except BotoCoreError as exc:
        raise _write_failed(outcome, exc) from exc
    return WRITTEN


def _write_failed(outcome: Outcome, exc: Exception) -> TransientError:
    return TransientError(f"Could not write the row of {outcome.photo.describe()}: {exc}")


def already_done(
    photos: Iterable[Photo], model_version: str, table: str, client: Any = None
) -> set[tuple[str, str]]:
    """The ``(photo, etag)`` keys that already have this model's row, so a retried event or
    a backfill run again skips their inference. A failed read just skips nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    keys = list(dict.fromkeys((photo.uri, photo.etag) for photo in photos))
    done: set[tuple[str, str]] = set()
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        chunk = keys[start : start + BATCH_GET_LIMIT]
        request = {
            table: {
                "Keys": [{"photo": {"S": p}, "etag": {"S": e}} for p, e in chunk],
                "ProjectionExpression": "photo, etag, model_version",
            }
        }
        try:
            answer = (client or dynamodb_client()).batch_get_item(RequestItems=request)
        except (ClientError, BotoCoreError):
            continue
        for item in answer.get("Responses", {}).get(table, []):
            if item.get("model_version", {}).get("S") == model_version:
                done.add((item["photo"]["S"], item["etag"]["S"]))
    return done


def to_attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (numbers as exact decimal strings)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    raise TypeError(f"Expected a str, number, bool or dict. Received: {type(value).__name__}")


def from_attribute(value: dict[str, Any]) -> Any:
    """The inverse of :func:`to_attribute` (numbers come back as float or int)."""
    ((kind, inner),) = value.items()
    if kind == "N":
        return int(inner) if inner.lstrip("-").isdigit() else float(inner)
    if kind == "M":
        return {k: from_attribute(v) for k, v in inner.items()}
    return inner


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A stored row as plain Python values."""
    return {name: from_attribute(value) for name, value in item.items()}


@functools.cache
def dynamodb_client() -> Any:
    """The process's DynamoDB client: short timeouts, botocore's standard retries."""
    return aws.client("dynamodb", connect_timeout_s=3, read_timeout_s=5, attempts=3, pool=32)
