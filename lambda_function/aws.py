"""The one way the serving package builds a boto3 client: short timeouts, standard retries.

boto3 is imported only when a client is first asked for, so a function that never touches
S3 or DynamoDB pays nothing for it at cold start.
"""

from __future__ import annotations

from typing import Any


def client(
    service: str,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    attempts: int,
    pool: int = 10,
) -> Any:
    """A boto3 client for ``service`` with these timeouts, ``attempts`` tries in all
    (botocore's standard retry mode) and up to ``pool`` connections."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        config=Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            max_pool_connections=pool,
        ),
    )
