"""The photos an upload event names, each checked before anything is read.

An event is trusted for its shape only: anyone who may invoke the function (or hand-edit a
redriven message) can write any record. A record that cannot name one object version
exactly, or names one outside the bucket and prefix this stack serves, is **skipped with a
reason** (kept in the answer and logged), so the rest of the event is still classified and
nothing is dropped silently. An event that is not one at all, or a batch whose bucket cannot
exist, raises :class:`BadEventError`: it ends in the on-failure queue (or fails its backfill
batch), never retried as if S3 might change its mind.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from lambda_function.failures import TransientError
from lambda_function.photos import BACKFILL, UPLOAD, Photo

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""S3's rule for bucket names: 3 to 63 lower-case letters, digits, dots and hyphens."""

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024
MAX_FIELD_CHARS = 1024
MAX_OBJECT_BYTES = 5 * 2**40
"""S3's largest object (5 TiB): a bigger size is no listing's."""

LATEST_EPOCH_S = 253402300799  # 9999-12-31T23:59:59Z, the last time ISO 8601 writes
SCOPE_VARIABLES = ("UPLOADS_BUCKET", "UPLOADS_PREFIX", "CATALOGUE_BUCKET", "CATALOGUE_PREFIX")


class BadEventError(TransientError):
    """The event is not one this function understands: raised, so it ends in the queue."""


@dataclass(frozen=True)
class Skip:
    """A record that was not classified, and why."""

    where: str
    key: str
    reason: str

    def summary(self) -> dict[str, str]:
        return {"record": self.where, "key": self.key, "status": "skipped", "reason": self.reason}


@dataclass
class Parsed:
    """The photos of an event, and the records skipped with their reasons."""

    photos: list[Photo] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


class RecordError(ValueError):
    """One record's field is unusable: the record is skipped with this reason."""


def parse_notification(event: dict[str, Any]) -> Parsed:
    """One photo per ``ObjectCreated`` record; other records (deletions) are not photos."""
    parsed = Parsed()
    for number, record in enumerate(event["Records"]):
        where = f"Records[{number}]"
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        try:
            s3 = _mapping(record.get("s3"), "s3")
            obj = _mapping(s3.get("object"), "s3.object")
            raw_key = _text(obj.get("key"), "s3.object.key")
            photo = Photo(
                bucket=bucket_name(_mapping(s3.get("bucket"), "s3.bucket").get("name")),
                key=object_key(unquote_plus(raw_key)),
                etag=etag_of(obj.get("eTag")),
                version_id=_optional_text(obj.get("versionId"), "s3.object.versionId"),
                size=size_of(obj.get("size")),
                uploaded_at=_optional_text(record.get("eventTime"), "eventTime"),
                source=UPLOAD,
            )
        except RecordError as refused:
            parsed.skipped.append(Skip(where, _shown_key(record), str(refused)))
            continue
        parsed.photos.append(photo)
    return parsed


def parse_batch(event: dict[str, Any]) -> Parsed:
    """The ``ListObjectsV2`` items of a batch (``Key``, ``Etag``, ``Size``, ``LastModified``);
    the bucket comes from ``BatchInput``. Folder placeholders (``key/``, 0 bytes) are skipped."""
    try:
        bucket = bucket_name(event["BatchInput"].get("bucket"))
    except RecordError as refused:
        raise BadEventError(f"Expected BatchInput.bucket as {refused}") from None
    parsed = Parsed()
    for number, item in enumerate(event["Items"]):
        where = f"Items[{number}]"
        try:
            if not isinstance(item, dict):
                raise RecordError(f"Expected an object. Received: {type(item).__name__}")
            key, size = object_key(_text(item.get("Key"), "Key")), size_of(item.get("Size"))
            photo = Photo(
                bucket=bucket,
                key=key,
                etag=etag_of(item.get("Etag") or item.get("ETag")),
                size=size,
                uploaded_at=iso_time(item.get("LastModified")),
                source=BACKFILL,
            )
        except RecordError as refused:
            shown = item.get("Key") if isinstance(item, dict) else None
            parsed.skipped.append(Skip(where, _bounded(shown), str(refused)))
            continue
        if key.endswith("/") and size == 0:
            continue
        parsed.photos.append(photo)
    return parsed


def bucket_name(value: Any) -> str:
    if not isinstance(value, str) or not BUCKET_NAME.fullmatch(value) or ".." in value:
        raise RecordError(f"an S3 bucket name (3-63 of a-z 0-9 . -). Received: {_bounded(value)}")
    return value


def object_key(key: str) -> str:
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise RecordError(
            f"Expected a key of 1 to {MAX_KEY_BYTES} bytes. Received: {_bounded(key)}"
        )
    if CONTROL.search(key):
        raise RecordError(f"Expected a key without control characters. Received: {_bounded(key)}")
    return key


def etag_of(value: Any) -> str:
    """The ETag without its quotes ("" when the record has none: the object's current ETag,
    from the read, then names the row)."""
    if value is None:
        return ""
    etag = _text(value, "eTag").strip('"')
    if '"' in etag or len(etag) > 128 or CONTROL.search(etag):
        raise RecordError(f"Expected an eTag (the object's, unquoted). Received: {_bounded(value)}")
    return etag


def size_of(value: Any) -> int | None:
    """The object's size in bytes, or ``None`` when the record has none."""
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OBJECT_BYTES:
        raise RecordError(
            f"Expected a size of 0 to {MAX_OBJECT_BYTES:,} bytes. Received: {_bounded(value)}"
        )
    return value


def iso_time(value: Any) -> str:
    """A listing's ``LastModified`` (epoch seconds or an ISO string) as ISO 8601."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (math.isfinite(value) and 0 <= value <= LATEST_EPOCH_S):
            raise RecordError(
                f"Expected LastModified in epoch seconds 0 to {LATEST_EPOCH_S}. "
                f"Received: {_bounded(value)}"
            )
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return _optional_text(value, "LastModified")


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecordError(f"Expected {name} as an object. Received: {_bounded(value)}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"Expected {name} as a string. Received: {_bounded(value)}")
    return value


def _optional_text(value: Any, name: str) -> str:
    if value is None:
        return ""
    text = _text(value, name)
    if len(text) > MAX_FIELD_CHARS or CONTROL.search(text):
        raise RecordError(f"Expected {name} of printable characters. Received: {_bounded(text)}")
    return text


def _shown_key(record: Any) -> str:
    try:
        return _bounded(record["s3"]["object"]["key"])
    except (KeyError, TypeError):
        return ""


def _bounded(value: Any, limit: int = 200) -> str:
    """``value`` as a log may show it: ``repr`` (control characters escaped), bounded."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


@dataclass(frozen=True)
class Scope:
    """The (bucket, prefix) pairs this function serves, from the variables the template sets;
    empty (outside a stack) means every photo."""

    allowed: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Scope:
        env = os.environ if environ is None else environ
        pairs = []
        for bucket, prefix in (("UPLOADS_BUCKET", "UPLOADS_PREFIX"),
                               ("CATALOGUE_BUCKET", "CATALOGUE_PREFIX")):  # fmt: skip
            if env.get(bucket):
                pairs.append((env[bucket], env.get(prefix, "")))
        return cls(tuple(pairs))

    def refusal(self, photo: Photo) -> str:
        """Why the function must not read ``photo`` ("" when it may)."""
        if not self.allowed:
            return ""
        if any(photo.bucket == b and photo.key.startswith(p) for b, p in self.allowed):
            return ""
        served = ", ".join(f"s3://{b}/{p}" for b, p in self.allowed)
        return f"Expected a photo under {served} (this stack's). Received: {photo.uri!r}"

    def screen(self, parsed: Parsed) -> Parsed:
        """``parsed`` with the photos outside the scope skipped."""
        kept = Parsed(skipped=list(parsed.skipped))
        for photo in parsed.photos:
            reason = self.refusal(photo)
            if reason:
                kept.skipped.append(Skip(photo.source, _bounded(photo.key), reason))
            else:
                kept.photos.append(photo)
        return kept
