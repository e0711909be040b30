"""Photos stored in S3: which object version a row is about, and reading its bytes.

One ``GetObject`` per photo, no ``HEAD`` first: the byte cap is checked on the answer's
``Content-Length`` before the body is read. The request names exactly the version the
event or listing saw (``VersionId`` when the bucket is versioned, and ``If-Match`` on the
ETag whenever there is one, both together when both are known), so a photo overwritten in
the meantime, or an event naming one version's ETag and another's ``versionId``, is never
classified under the wrong name: it answers ``superseded``, and a real upload has its own
event.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from lambda_function import aws
from lambda_function.failures import PermanentError, TransientError, from_s3_error

UPLOAD, BACKFILL = "upload", "backfill"


@dataclass(frozen=True)
class Photo:
    """One version of one object: what a result row is keyed by."""

    bucket: str
    key: str
    etag: str
    """Without the quotes S3 puts around it in listings and headers."""
    version_id: str = ""
    size: int | None = None
    uploaded_at: str = ""
    """ISO 8601: the event's time, or the object's LastModified in a listing."""
    source: str = UPLOAD

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def describe(self) -> str:
        """For messages: the URI, and the version when there is one."""
        return f"{self.uri} (version {self.version_id})" if self.version_id else self.uri


def read_photo(photo: Photo, max_bytes: int, client: Any = None) -> bytes:
    """The photo's bytes; :class:`PermanentError` or :class:`TransientError` otherwise."""
    return read_version(photo, max_bytes, client)[1]


def read_version(photo: Photo, max_bytes: int, client: Any = None) -> tuple[Photo, bytes]:
    """The photo (its ETag filled in from S3's answer when the record had none) and its bytes;
    :class:`PermanentError` or :class:`TransientError` otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    if photo.size is not None and photo.size > max_bytes:
        raise _too_large(photo, photo.size, max_bytes)
    params = {"Bucket": photo.bucket, "Key": photo.key}
    if photo.version_id:
        params["VersionId"] = photo.version_id
    if photo.etag:
        params["IfMatch"] = f'"{photo.etag}"'
    try:
        answer = (client or s3_client()).get_object(**params)
        length = int(answer.get("ContentLength", 0))
        if length > max_bytes:
            answer["Body"].close()
            raise _too_large(photo, length, max_bytes)
        data: bytes = answer["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise from_s3_error(exc, photo.describe()) from exc
    except OSError as exc:  # the connection broke while the body streamed
        raise TransientError(f"Reading {photo.describe()} broke off: {exc}") from exc
    if len(data) != length:
        raise TransientError(
            f"Expected {length:,} bytes of {photo.describe()}. Received: {len(data):,}."
        )
    if not photo.etag:
        photo = dataclasses.replace(photo, etag=str(answer.get("ETag", "")).strip('"'))
    return photo, data


def _too_large(photo: Photo, size: int, max_bytes: int) -> PermanentError:
    return PermanentError(
        "image_too_large",
        f"Expected an image of at most {max_bytes:,} bytes. Received: {size:,} "
        f"({photo.describe()}).",
    )


@functools.cache
def s3_client() -> Any:
    """The process's S3 client: short timeouts, botocore's standard retries, a wide pool."""
    return aws.client("s3", connect_timeout_s=3, read_timeout_s=10, attempts=3, pool=32)
