"""``s3://bucket/key`` through boto3, for allow-listed buckets only."""

from __future__ import annotations

import functools
import math
from typing import Any
from urllib.parse import unquote, urlsplit

from lambda_function import aws
from lambda_function.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnprocessableError,
    UpstreamTimeoutError,
)
from lambda_function.fetch.dns import remaining
from lambda_function.fetch.policy import FetchPolicy


def fetch_s3(url: str, policy: FetchPolicy, deadline: float) -> bytes:
    """``s3://bucket/key`` from an allowed bucket: ``HEAD`` for the size, then the bytes."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    bucket, key = _bucket_and_key(url)
    if bucket not in policy.s3_buckets:
        raise BadRequestError(
            "Expected an s3:// URL in a bucket this function reads.", code="url_not_allowed"
        )
    where = f"s3://{bucket}/{key}"
    try:
        size = _s3_for(policy, deadline).head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > policy.max_bytes:
            raise _too_large(policy, f"{where} has {size:,} bytes")
        answer = _s3_for(policy, deadline).get_object(Bucket=bucket, Key=key)
        data = answer["Body"].read(policy.max_bytes + 1)
        answer["Body"].close()
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        raise UpstreamTimeoutError("S3 did not answer in time.", detail=f"{where}: {exc}") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise UnprocessableError(
            "Could not get the object from S3.", code="s3_error", detail=f"{where}: {code}"
        ) from exc
    except BotoCoreError as exc:
        raise UnprocessableError(
            "Could not get the object from S3.", code="s3_error", detail=f"{where}: {exc}"
        ) from exc
    if len(data) > policy.max_bytes:  # the object grew between HEAD and GET
        raise _too_large(policy, f"{where} grew past the cap after HEAD")
    return data


def _bucket_and_key(url: str) -> tuple[str, str]:
    """The bucket and key of ``s3://bucket/key``; a 400 for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        parts = None
    bucket = parts.netloc if parts is not None else ""
    key = unquote(parts.path.lstrip("/")) if parts is not None else ""
    if not bucket or not key:
        raise BadRequestError("Expected s3://bucket/key.", code="invalid_url")
    return bucket, key


def _too_large(policy: FetchPolicy, detail: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Expected an image of at most {policy.max_bytes:,} bytes. The object is larger.",
        detail=detail,
    )


def _s3_for(policy: FetchPolicy, deadline: float) -> Any:
    """A client whose timeouts (and retries) fit in the time left, in whole seconds."""
    left = math.ceil(remaining(deadline))
    connect, read = min(policy.connect_timeout_s, left), min(policy.read_timeout_s, left)
    attempts = 2 if 2 * (connect + read) <= left else 1
    return s3_client(connect, read, attempts)


@functools.cache
def s3_client(connect_timeout_s: float, read_timeout_s: float, attempts: int = 2) -> Any:
    """One boto3 S3 client per timeout setting (boto3 is imported only when s3:// is used)."""
    return aws.client(
        "s3", connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s, attempts=attempts
    )
