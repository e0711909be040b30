"""Photos in S3 to rows in the results table: the upload trigger and the backfill's batches.

``lambda_function.uploads.lambda_handler`` (the upload function's ``ImageConfig.Command``)
answers two events:

- an **S3 event notification** (``Records[].s3``, sent asynchronously when a photo is
  uploaded; keys URL-encoded with ``+`` for spaces, ``versionId`` in versioned buckets);
- a **Step Functions Distributed Map batch** (``{"Items": [...], "BatchInput": {...}}``,
  the items being S3 ``ListObjectsV2`` entries) during a backfill.

Each record is checked first (:mod:`lambda_function.upload_records`): one that cannot name
an object version, or names one outside this stack's bucket and prefix, is skipped with a
reason. Photos that already have their row are skipped too; the others are read, classified
and written **chunk by chunk** (:mod:`lambda_function.upload_limits`), so memory is that of
one chunk whatever the batch size, and every chunk's rows are stored before the next is read.
A photo that can never be classified gets an error row. Anything transient, including the
photos the invocation's deadline left unread or unclassified, is raised after the rest is
written, so AWS retries the event and the rows already written make the retry cheap. Every
invocation prints one EMF line (photos classified, failed, skipped, transient; duration).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from lambda_function import answer_metrics, observe
from lambda_function.decode_limits import function_memory_mb
from lambda_function.events import Item, Request
from lambda_function.failures import PermanentError, TransientError
from lambda_function.photos import UPLOAD, Photo, read_version, s3_client
from lambda_function.process import get_service, load_at_init
from lambda_function.results import (
    Outcome,
    Stamp,
    already_done,
    dynamodb_client,
    limits_of,
    put,
    table_name,
)
from lambda_function.service import Service
from lambda_function.upload_limits import Deadline, MemoryBudget, chunks
from lambda_function.upload_records import (
    BadEventError,
    Parsed,
    Scope,
    Skip,
    iso_time,
    parse_batch,
    parse_notification,
)

__all__ = ["BadEventError", "lambda_handler", "process"]

logger = logging.getLogger("lambda_function")

IO_WORKERS = 16
"""Parallel S3 reads and table writes per invocation (I/O bound: threads are enough)."""

_iso = iso_time  # the listing's LastModified as ISO 8601 (kept for callers of the old name)


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
    kind = "s3" if is_s3_notification(event) else "backfill" if is_backfill_batch(event) else ""
    report: Report | None = None
    try:
        if not kind:
            received = sorted(event) if isinstance(event, dict) else type(event).__name__
            raise BadEventError(
                "Expected an S3 event notification (Records) or a Distributed Map batch "
                f"(Items, BatchInput). Received: {received}"
            )
        parsed = parse_notification(event) if kind == "s3" else parse_batch(event)
        parsed = Scope.from_env().screen(parsed)
        try:
            service = get_service()
        except Exception as exc:  # a model that does not load is worth a retry
            raise TransientError(f"The model could not be loaded: {exc}") from exc
        report = run(parsed, service, table_name(), remaining_s=_remaining_s(context))
        summary = report.answer()
    except TransientError as exc:
        _report_line(_line(kind, report, started, type(exc).__name__))
        raise
    finally:
        if report is not None:
            report.log()
    _report_line(_line(kind, report, started, ""))
    return summary


def _report_line(line: dict[str, Any]) -> None:
    """The invocation's log line (the application log), and its metrics (EMF, on stdout)."""
    logger.info(json.dumps(line))
    observe.emit(observe.upload_metrics(line))


def photos_from_notification(event: dict[str, Any]) -> list[Photo]:
    """The photos of an S3 notification's ``ObjectCreated`` records (skipped ones left out)."""
    return parse_notification(event).photos


def photos_from_batch(event: dict[str, Any]) -> list[Photo]:
    """The photos of a Distributed Map batch (folder placeholders and skipped items left out)."""
    return parse_batch(event).photos


@dataclass
class Report:
    """What one invocation did with every photo it was given."""

    model_version: str
    stored: list[dict[str, Any]] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    photos: int = 0

    def answer(self) -> dict[str, Any]:
        """The summary, or :class:`TransientError` (after the rest is stored) to be retried."""
        if self.transient:
            raise TransientError(
                f"{len(self.transient)} of {self.photos} photos failed transiently and will be "
                f"retried (the {len(self.stored)} others are stored). First: {self.transient[0]}"
            )
        summary: dict[str, Any] = {"photos": self.stored, "model_version": self.model_version}
        if self.skipped:
            summary["skipped"] = [skip.summary() for skip in self.skipped]
        return summary

    def log(self) -> None:
        """One warning per invocation that skipped or must retry photos, naming each."""
        if self.transient:
            first = self.transient[:20]
            logger.warning(json.dumps({"transient": first, "stored": len(self.stored)}))
        if self.skipped:
            logger.warning(json.dumps({"skipped": [skip.summary() for skip in self.skipped]}))


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
    report = run(Parsed(list(photos)), service, table, remaining_s=remaining_s, s3=s3,
                 dynamodb=dynamodb)  # fmt: skip
    report.log()
    return report.answer()


def run(
    parsed: Parsed,
    service: Service,
    table: str,
    *,
    remaining_s: float = 60.0,
    s3: Any = None,
    dynamodb: Any = None,
) -> Report:
    """Every photo of ``parsed`` stored, skipped, or listed as transient, chunk by chunk,
    within the time left; see the module."""
    config, metadata = service.config, service.classifier.metadata
    stamp = Stamp(
        metadata.version or "unknown",
        metadata.created_at,
        limits_of(config.max_image_bytes, config.max_pixels),
    )
    memory_mb = function_memory_mb()
    budget = MemoryBudget.of(memory_mb, config.max_pixels)
    if memory_mb is not None:
        budget.check_one_fits(config.max_image_bytes, metadata.image_size, memory_mb)
    # The clients are built here, once, not by 16 reading threads racing against the deadline.
    s3, dynamodb = s3 or s3_client(), dynamodb or dynamodb_client()
    deadline = Deadline.of(remaining_s, config.reserve_s, metadata.image_size, memory_mb)
    unique = list(dict.fromkeys(parsed.photos))
    report = Report(stamp.version, skipped=list(parsed.skipped), photos=len(unique))
    done = already_done(unique, stamp.version, table, dynamodb, stamp=stamp) if unique else set()
    todo = [photo for photo in unique if (photo.uri, photo.etag) not in done]
    pool = ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="upload-io")
    try:
        left = list(chunks(todo, budget, config.max_image_bytes, metadata.image_size))
        while left:
            chunk = left.pop(0)
            fit = deadline.photos_that_fit()
            if fit < len(chunk):
                left.insert(0, chunk[max(fit, 0) :])
                chunk = chunk[:fit]
            if not chunk:
                break
            outcomes, transient = _classify_chunk(chunk, service, deadline, pool, s3)
            outcomes = _nameable(outcomes, report)
            report.transient += transient
            report.stored += _store(outcomes, stamp, table, dynamodb, pool, deadline, report)
        for rest in left:
            report.transient += [
                f"{photo.describe()}: not classified before the invocation's deadline"
                for photo in rest
            ]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # never wait for an abandoned read
    report.stored += [
        {"key": photo.key, "etag": photo.etag, "status": "done", "row": "unchanged"}
        for photo in unique
        if (photo.uri, photo.etag) in done
    ]
    return report


def _classify_chunk(
    chunk: list[Photo], service: Service, deadline: Deadline, pool: ThreadPoolExecutor, s3: Any
) -> tuple[list[Outcome], list[str]]:
    """One chunk read (waiting no later than the deadline) and classified."""
    max_bytes = service.config.max_image_bytes

    def read(photo: Photo) -> tuple[Photo, bytes]:
        if deadline.left() <= 0:
            raise TransientError(f"{photo.describe()}: not read before the invocation's deadline")
        return read_version(photo, max_bytes, s3)

    reads = _read_all(pool, read, chunk, deadline)
    outcomes: list[Outcome] = []
    transient: list[str] = []
    readable: list[tuple[Photo, bytes]] = []
    for photo, data in zip(chunk, reads, strict=True):
        if isinstance(data, PermanentError):
            outcomes.append(Outcome(photo, failure=data))
        elif isinstance(data, Exception):
            transient.append(f"{photo.describe()}: {data}")
        else:
            readable.append(data)
    fit = deadline.photos_that_fit(reads_pending=False)
    transient += [
        f"{photo.describe()}: not classified before the invocation's deadline"
        for photo, _ in readable[fit:]
    ]
    started = time.monotonic()
    classified, failed = classify(readable[:fit], service, deadline)
    deadline.measured(min(fit, len(readable)), time.monotonic() - started)
    answer_metrics.emit([o.answer for o in classified if o.answer is not None], kind_of(chunk))
    return outcomes + classified, transient + failed


def _read_all(
    pool: ThreadPoolExecutor,
    read: Callable[[Photo], tuple[Photo, bytes]],
    chunk: list[Photo],
    deadline: Deadline,
) -> list[Any]:
    """The chunk's reads, waited for while the photos already in still leave time for their
    inference (:meth:`Deadline.read_wait`); a read not done by then is a TransientError (its
    thread is abandoned, never waited for)."""
    futures = [pool.submit(_guarded, read, photo) for photo in chunk]
    pending: set[Future[Any]] = set(futures)
    while pending:
        budget = deadline.read_wait(len(futures) - len(pending))
        if budget <= 0:
            break
        _, pending = wait(pending, timeout=budget, return_when=FIRST_COMPLETED)
    answers = []
    for future in futures:
        if future in pending:
            future.cancel()
            answers.append(TransientError("S3 did not answer before the invocation's deadline"))
        else:
            answers.append(future.result())
    return answers


def _nameable(outcomes: list[Outcome], report: Report) -> list[Outcome]:
    """The outcomes that can name their row; a record without an ETag whose object could not
    be read (so S3 never told its ETag) is skipped with the reason instead."""
    kept = []
    for outcome in outcomes:
        if outcome.photo.etag:
            kept.append(outcome)
        else:
            reason = f"no eTag in the record, and the read failed: {outcome.status}"
            if outcome.failure is not None:
                reason = f"no eTag in the record, and S3 answered {outcome.failure.code}"
            report.skipped.append(Skip(outcome.photo.source, repr(outcome.photo.key), reason))
    return kept


def _store(
    outcomes: list[Outcome],
    stamp: Stamp,
    table: str,
    dynamodb: Any,
    pool: ThreadPoolExecutor,
    deadline: Deadline,
    report: Report,
) -> list[dict[str, Any]]:
    """Write ``outcomes`` (waiting no later than the write deadline); failures go to the
    report's transient list. The summaries of the rows stored."""
    writes = _bounded(
        pool,
        lambda o: put(o, stamp.version, table, dynamodb, stamp=stamp),
        outcomes,
        deadline.write_left(),
        "DynamoDB did not answer",
    )
    stored = []
    for outcome, write in zip(outcomes, writes, strict=True):
        if isinstance(write, Exception):
            report.transient.append(f"{outcome.photo.describe()}: {write}")
        else:
            stored.append({**outcome.summary(), "row": write})
    return stored


def kind_of(photos: list[Photo]) -> str:
    """The drift lines' ``source``: ``upload`` or ``backfill`` (the batch's photos share it)."""
    return photos[0].source if photos else UPLOAD


def classify(
    readable: list[tuple[Photo, bytes]], service: Service, deadline: Deadline | float
) -> tuple[list[Outcome], list[str]]:
    """One batched inference over the photos' bytes, with the service's limits and errors:
    the outcomes to store, and what failed in a way a retry may fix (a 5xx of the service)."""
    if not readable:
        return [], []
    if isinstance(deadline, Deadline):  # decoding ends by the work deadline
        decode_deadline = deadline.work_ends - service.config.reserve_s / 2
    else:  # seconds remaining, as before
        decode_deadline = service.deadline(deadline)
    request = Request(tuple(Item(data=data) for _, data in readable), batch=True)
    answer = service.answer(request, decode_deadline)
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


def _guarded(function: Callable[[Any], Any], item: Any) -> Any:
    """``function(item)``, or the Permanent/TransientError it raised."""
    try:
        return function(item)
    except (PermanentError, TransientError) as exc:
        return exc


def _bounded(
    pool: ThreadPoolExecutor,
    function: Callable[[Any], Any],
    items: Sequence[Any],
    timeout_s: float,
    late: str,
) -> list[Any]:
    """``function`` over ``items`` in ``pool``, waiting at most ``timeout_s``: each item's
    result, its Permanent/TransientError, or a TransientError for one not done in time (its
    thread is abandoned, never waited for)."""
    futures: list[Future[Any]] = [pool.submit(_guarded, function, item) for item in items]
    finished, _ = wait(futures, timeout=max(0.0, timeout_s))
    answers = []
    for future in futures:
        if future in finished:
            answers.append(future.result())
        else:
            future.cancel()
            answers.append(TransientError(f"{late} before the invocation's deadline"))
    return answers


def _line(kind: str, report: Report | None, started: float, error: str) -> dict[str, Any]:
    """The invocation's log line: what came of its photos, and how long it took."""
    stored = report.stored if report else []
    statuses = Counter(photo["status"] for photo in stored)
    codes = Counter(photo["error"] for photo in stored if "error" in photo)
    return {
        "event": kind or "unknown",
        "photos": report.photos if report else 0,
        "classified": statuses.get("classified", 0),
        "failed": statuses.get("failed", 0),
        "unchanged": statuses.get("done", 0),
        "skipped": len(report.skipped) if report else 0,
        "transient": len(report.transient) if report else 0,
        "codes": dict(codes),
        "error": error,
        "total_ms": _ms(started),
    }


def _remaining_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else 60.0


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


load_at_init()  # inside Lambda: the model loads and warms up during the init phase
