"""The results table: one row per photo version, written once per model version.

Key: ``photo`` (``s3://bucket/key``, partition) + ``etag`` (sort). A re-upload of the
same key with new bytes has a new ETag, so it gets a new row beside the old one; the
same bytes uploaded again are the same row. The write is conditional (:func:`condition`):
it happens only when there is no row yet, when the row came from an *older* model (models
are ordered by the ``created_at`` that ``convert`` writes into their metadata; a model
without one never replaces a model with one), when the row is this model's error under
other limits (a raised ``MAX_IMAGE_BYTES`` may now classify it), or when the row names
another version of the object (the same bytes uploaded again, A, B, A: the newest upload's
row must be A's). So the same version processed twice (a retried event, a redriven
message, a backfill over photos the trigger already saw) leaves one correct row, a
backfill with a newer model replaces the old model's answers, and an older one never
replaces a newer one's.
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
class Stamp:
    """What a row says about the model and settings that wrote it."""

    version: str
    created_at: str = ""
    """ISO 8601 from the model's metadata: the order of models (a later one is newer)."""
    limits: str = ""
    """The limits an error row was refused under (``bytes=...,pixels=...``)."""

    def newer_than_row(self, item: dict[str, Any]) -> bool:
        """Whether this model may replace the row ``item`` of another model."""
        theirs = item.get("model_created_at", {}).get("S", "")
        if not self.created_at:
            return not theirs
        return theirs <= self.created_at

    def done(self, item: dict[str, Any], photo: Photo) -> bool:
        """Whether the stored row ``item`` already says what this model would say."""
        if item.get("model_version", {}).get("S") != self.version:
            return not self.newer_than_row(item)  # a newer model's row is left alone
        if photo.version_id and item.get("version_id", {}).get("S") != photo.version_id:
            return False
        status = item.get("status", {}).get("S")
        return status == CLASSIFIED or item.get("limits", {}).get("S", "") == self.limits


def limits_of(max_image_bytes: int, max_pixels: int) -> str:
    return f"bytes={max_image_bytes},pixels={max_pixels}"


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


def row(
    outcome: Outcome,
    model_version: str,
    now: datetime | None = None,
    *,
    stamp: Stamp | None = None,
) -> dict[str, Any]:
    """The item to store, in DynamoDB's attribute-value form."""
    photo = outcome.photo
    stamp = stamp or Stamp(model_version)
    item: dict[str, Any] = {
        "photo": photo.uri,
        "etag": photo.etag,
        "bucket": photo.bucket,
        "key": photo.key,
        "version_id": photo.version_id,
        "source": photo.source,
        "status": outcome.status,
        "model_version": model_version,
        "model_created_at": stamp.created_at,
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
        item |= {
            "error_code": outcome.failure.code,
            "error_message": outcome.failure.message,
            "limits": stamp.limits,
        }
    return {name: to_attribute(value) for name, value in item.items() if value != ""}


def answer_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer's flags that feedback and drift read: ``confident``, ``out_of_catalogue``."""
    return {
        name: bool(answer[name]) for name in ("confident", "out_of_catalogue") if name in answer
    }


def put(
    outcome: Outcome,
    model_version: str,
    table: str,
    client: Any = None,
    *,
    stamp: Stamp | None = None,
) -> str:
    """Store ``outcome`` unless the row there may stay (:func:`condition`): ``written`` or
    ``unchanged``. Any other failure of the write is transient."""
    from botocore.exceptions import BotoCoreError, ClientError

    stamp = stamp or Stamp(model_version)
    expression, values = condition(stamp, outcome.photo)
    try:
        (client or dynamodb_client()).put_item(
            TableName=table,
            Item=row(outcome, model_version, stamp=stamp),
            ConditionExpression=expression,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if aws_error_code(exc) == "ConditionalCheckFailedException":
            return UNCHANGED
        raise _write_failed(outcome, exc) from exc
    except BotoCoreError as exc:
        raise _write_failed(outcome, exc) from exc
    return WRITTEN


def condition(stamp: Stamp, photo: Photo) -> tuple[str, dict[str, Any]]:
    """When a write may replace the row there: none yet; an older model's row; this model's
    error row under other limits; this model's row of another version of the object."""
    values: dict[str, Any] = {
        ":model": {"S": stamp.version},
        ":failed": {"S": FAILED},
        ":limits": {"S": stamp.limits},
    }
    if stamp.created_at:
        values[":created"] = {"S": stamp.created_at}
        older = "(attribute_not_exists(model_created_at) OR model_created_at <= :created)"
    else:
        older = "attribute_not_exists(model_created_at)"
    clauses = [
        "attribute_not_exists(photo)",
        f"(model_version <> :model AND {older})",
        "(model_version = :model AND #status = :failed"
        " AND (attribute_not_exists(limits) OR limits <> :limits))",
    ]
    if photo.version_id:
        values[":version"] = {"S": photo.version_id}
        clauses.append(
            "(model_version = :model"
            " AND (attribute_not_exists(version_id) OR version_id <> :version))"
        )
    return " OR ".join(clauses), values


def _write_failed(outcome: Outcome, exc: Exception) -> TransientError:
    return TransientError(f"Could not write the row of {outcome.photo.describe()}: {exc}")


def already_done(
    photos: Iterable[Photo],
    model_version: str,
    table: str,
    client: Any = None,
    *,
    stamp: Stamp | None = None,
) -> set[tuple[str, str]]:
    """The ``(photo, etag)`` keys whose row may stay (:meth:`Stamp.done`), so a retried event
    or a backfill run again skips their inference. A failed read just skips nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    stamp = stamp or Stamp(model_version)
    by_key = {(photo.uri, photo.etag): photo for photo in photos if photo.etag}
    keys = list(by_key)
    done: set[tuple[str, str]] = set()
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        chunk = keys[start : start + BATCH_GET_LIMIT]
        request = {
            table: {
                "Keys": [{"photo": {"S": p}, "etag": {"S": e}} for p, e in chunk],
                "ProjectionExpression": "photo, etag, model_version, model_created_at, "
                "version_id, #status, limits",
                "ExpressionAttributeNames": {"#status": "status"},
            }
        }
        try:
            answer = (client or dynamodb_client()).batch_get_item(RequestItems=request)
        except (ClientError, BotoCoreError):
            continue
        for item in answer.get("Responses", {}).get(table, []):
            key = (item["photo"]["S"], item["etag"]["S"])
            if key in by_key and stamp.done(item, by_key[key]):
                done.add(key)
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
