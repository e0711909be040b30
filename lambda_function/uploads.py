"""Photos in S3 to rows in the results table: the upload trigger and the backfill's batches.

``lambda_function.uploads.lambda_handler`` (the upload function's ``ImageConfig.Command``)
answers two events:

- an **S3 event notification** (``Records[].s3``, sent asynchronously when a photo is
  uploaded; keys URL-encoded with ``+`` for spaces, ``versionId`` in versioned buckets);
- a **Step Functions Distributed Map batch** (``{"Items": [...], "BatchInput": {...}}``,
  the items being S3 ``ListObjectsV2`` entries) during a backfill.

Photos that already have this model's row are skipped; the others are read in parallel,
classified by the service in one batched inference, and written as rows. A photo that can
never be classified gets an error row. Anything transient is raised after the rest is
written, so AWS retries the event and the rows already written make the retry cheap.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from lambda_function import answer_metrics
from lambda_function.events import Item, Request
from lambda_function.failures import PermanentError, TransientError
from lambda_function.photos import BACKFILL, UPLOAD, Photo, read_photo
from lambda_function.process import get_service, load_at_init
from lambda_function.results import Outcome, already_done, put, table_name
from lambda_function.service import Service

logger = logging.getLogger("lambda_function")

IO_WORKERS = 16
"""Parallel S3 reads and table writes per invocation (I/O bound: threads are enough)."""


class BadEventError(TransientError):
    """The event is not one this function understands: raised, so it ends in the queue."""


def is_s3_notification(event: Any) -> bool:
    """Whether ``event`` is what S3 sends to Lambda: ``Records`` from ``aws:s3``, or the test
    event S3 sends once when the notification is configured."""
    if not isinstance(event, dict):
        return False
    if event.get("Event") == "s3:TestEvent":
        return True
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


def is_backfill_batch(event: Any) -> bool:
    """Whether ``event`` is a Distributed Map batch (``ItemBatcher``): Items + BatchInput."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("Items"), list)
        and isinstance(event.get("BatchInput"), dict)
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Classify the photos ``event`` names into the results table; raise what may be retried."""
    started = time.monotonic()
    if isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
        return {"photos": [], "ignored": "s3:TestEvent"}
    if is_s3_notification(event):
        kind, photos = "s3", photos_from_notification(event)
    elif is_backfill_batch(event):
        kind, photos = "backfill", photos_from_batch(event)
    else:
        received = sorted(event) if isinstance(event, dict) else type(event).__name__
        raise BadEventError(
            "Expected an S3 event notification (Records) or a Distributed Map batch "
            f"(Items, BatchInput). Received: {received}"
        )
    try:
        service = get_service()
    except Exception as exc:  # a model that does not load is worth a retry
        raise TransientError(f"The model could not be loaded: {exc}") from exc
    summary = process(photos, service, table_name(), remaining_s=_remaining_s(context))
    logger.info(json.dumps({"event": kind, **_counts(summary), "total_ms": _ms(started)}))
    return summary


def photos_from_notification(event: dict[str, Any]) -> list[Photo]:
    """One photo per ``ObjectCreated`` record; other records (deletions) are not photos."""
    photos = []
    for number, record in enumerate(event["Records"]):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        try:
            s3 = record["s3"]
            obj = s3["object"]
            photos.append(
                Photo(
                    bucket=str(s3["bucket"]["name"]),
                    key=unquote_plus(str(obj["key"])),
                    etag=str(obj.get("eTag", "")).strip('"'),
                    version_id=str(obj.get("versionId") or ""),
                    size=int(obj["size"]) if "size" in obj else None,
                    uploaded_at=str(record.get("eventTime", "")),
                    source=UPLOAD,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadEventError(
                f"Expected Records[{number}].s3 with bucket.name and object.key. Received: {exc!r}"
            ) from exc
    return photos


def photos_from_batch(event: dict[str, Any]) -> list[Photo]:
    """The ``ListObjectsV2`` items of a batch (``Key``, ``Etag``, ``Size``, ``LastModified``);
    the bucket comes from ``BatchInput``. Folder placeholders (``key/``, 0 bytes) are skipped."""
    bucket = event["BatchInput"].get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise BadEventError(f"Expected BatchInput.bucket. Received: {event['BatchInput']!r}")
    photos = []
    for number, item in enumerate(event["Items"]):
        try:
            key, size = str(item["Key"]), int(item.get("Size", -1))
            etag = str(item.get("Etag") or item.get("ETag") or "").strip('"')
            modified = item.get("LastModified", "")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadEventError(
                f"Expected Items[{number}] with Key, Etag and Size. Received: {item!r}"
            ) from exc
        if key.endswith("/") and size == 0:
            continue
        photos.append(
            Photo(
                bucket=bucket,
                key=key,
                etag=etag,
                size=size if size >= 0 else None,
                uploaded_at=_iso(modified),
                source=BACKFILL,
            )
        )
    return photos


def process(
    photos: list[Photo],
    service: Service,
    table: str,
    *,
    remaining_s: float = 60.0,
    s3: Any = None,
    dynamodb: Any = None,
) -> dict[str, Any]:
    """Read, classify and store ``photos``: the answer lists every photo's outcome.

    Raises :class:`TransientError` (after storing everything else) if any photo failed in
    a way that a retry may fix."""
    model_version = service.classifier.metadata.version or "unknown"
    unique = list(dict.fromkeys(photos))
    done = already_done(unique, model_version, table, dynamodb) if unique else set()
    todo = [photo for photo in unique if (photo.uri, photo.etag) not in done]
    transient: list[str] = []

    reads = _parallel(lambda p: read_photo(p, service.config.max_image_bytes, s3), todo)
    outcomes: list[Outcome] = []
    readable: list[tuple[Photo, bytes]] = []
    for photo, data in zip(todo, reads, strict=True):
        if isinstance(data, PermanentError):
            outcomes.append(Outcome(photo, failure=data))
        elif isinstance(data, Exception):
            transient.append(f"{photo.describe()}: {data}")
        else:
            readable.append((photo, data))
    classified, failed = classify(readable, service, remaining_s)
    outcomes += classified
    answer_metrics.emit([o.answer for o in classified if o.answer is not None], kind_of(photos))
    transient += failed

    writes = _parallel(lambda o: put(o, model_version, table, dynamodb), outcomes)
    stored = []
    for outcome, write in zip(outcomes, writes, strict=True):
        if isinstance(write, Exception):
            transient.append(f"{outcome.photo.describe()}: {write}")
        else:
            stored.append({**outcome.summary(), "row": write})
    stored += [
        {"key": photo.key, "etag": photo.etag, "status": "done", "row": "unchanged"}
        for photo in unique
        if (photo.uri, photo.etag) in done
    ]
    if transient:
        logger.warning(json.dumps({"transient": transient[:20], "stored": len(stored)}))
        raise TransientError(
            f"{len(transient)} of {len(unique)} photos failed transiently and will be retried "
            f"(the {len(stored)} others are stored). First: {transient[0]}"
        )
    return {"photos": stored, "model_version": model_version}


def kind_of(photos: list[Photo]) -> str:
    """The drift lines' ``source``: ``upload`` or ``backfill`` (the batch's photos share it)."""
    return photos[0].source if photos else UPLOAD


def classify(
    readable: list[tuple[Photo, bytes]], service: Service, remaining_s: float
) -> tuple[list[Outcome], list[str]]:
    """One batched inference over the photos' bytes, with the service's limits and errors:
    the outcomes to store, and what failed in a way a retry may fix (a 5xx of the service)."""
    if not readable:
        return [], []
    request = Request(tuple(Item(data=data) for _, data in readable), batch=True)
    answer = service.answer(request, service.deadline(remaining_s))
    outcomes, transient = [], []
    results = answer.payload["results"]
    for (photo, data), result, item in zip(readable, results, answer.items, strict=True):
        image = {"bytes": len(data)} | (
            {"width": item.width, "height": item.height} if item.width else {}
        )
        if "error" not in result:
            result.pop("url", None)
            outcomes.append(Outcome(photo, answer=result, image=image))
        elif result["status"] < 500:
            error = result["error"]
            failure = PermanentError(error["code"], error["message"])
            outcomes.append(Outcome(photo, failure=failure, image=image))
        else:
            transient.append(f"{photo.describe()}: {result['error']['code']}")
    return outcomes, transient


def _parallel(function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``function`` over ``items`` in threads; an exception is returned in the item's place."""

    def guarded(item: Any) -> Any:
        try:
            return function(item)
        except (PermanentError, TransientError) as exc:
            return exc

    if len(items) <= 1:
        return [guarded(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(len(items), IO_WORKERS)) as pool:
        return list(pool.map(guarded, items))


def _iso(value: Any) -> str:
    """A listing's ``LastModified`` (epoch seconds or a string) as ISO 8601."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return str(value or "")


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    statuses = Counter(photo["status"] for photo in summary["photos"])
    codes = Counter(photo["error"] for photo in summary["photos"] if "error" in photo)
    return {"photos": len(summary["photos"]), **statuses, "codes": dict(codes)}


def _remaining_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else 60.0


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


load_at_init()  # inside Lambda: the model loads and warms up during the init phase
