"""``s3://bucket/key`` through boto3, for allow-listed buckets only."""

from __future__ import annotations

import functools
import math
from typing import Any
from urllib.parse import unquote, urlsplit

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

    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise BadRequestError(f"Expected s3://bucket/key. Received: {url!r}", code="invalid_url")
    if bucket not in policy.s3_buckets:
        raise BadRequestError(
            f"Bucket {bucket[:63]!r} is not one this function reads (S3_ALLOWED_BUCKETS).",
            code="url_not_allowed",
        )
    try:
        size = _s3_for(policy, deadline).head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > policy.max_bytes:
            raise PayloadTooLargeError(
                f"Expected an image of at most {policy.max_bytes:,} bytes. {url} has {size:,}."
            )
        answer = _s3_for(policy, deadline).get_object(Bucket=bucket, Key=key)
        data = answer["Body"].read(policy.max_bytes + 1)
        answer["Body"].close()
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        raise UpstreamTimeoutError(f"S3 did not answer in time for {url}: {exc}") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise UnprocessableError(f"Could not get {url} from S3: {code}", code="s3_error") from exc
    except BotoCoreError as exc:
        raise UnprocessableError(f"Could not get {url} from S3: {exc}", code="s3_error") from exc
    if len(data) > policy.max_bytes:  # the object grew between HEAD and GET
        raise PayloadTooLargeError(
            f"Expected an image of at most {policy.max_bytes:,} bytes. {url} has more."
        )
    return data


def _s3_for(policy: FetchPolicy, deadline: float) -> Any:
    """A client whose timeouts (and retries) fit in the time left, in whole seconds."""
    left = math.ceil(remaining(deadline))
    connect, read = min(policy.connect_timeout_s, left), min(policy.read_timeout_s, left)
    attempts = 2 if 2 * (connect + read) <= left else 1
    return s3_client(connect, read, attempts)


@functools.cache
def s3_client(connect_timeout_s: float, read_timeout_s: float, attempts: int = 2) -> Any:
    """One boto3 S3 client per timeout setting (boto3 is imported only when s3:// is used)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        config=BotoConfig(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": attempts, "mode": "standard"},
        ),
    )
