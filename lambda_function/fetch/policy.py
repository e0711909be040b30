"""The limits of one fetch, from the function's settings."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from lambda_function.config import Config
from lambda_function.fetch import addresses

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch. ``resolver`` (default :func:`~lambda_function.fetch.dns.resolve`,
    looked up at call time) and ``ssl_context`` are injectable for tests."""

    max_bytes: int
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    max_redirects: int = 3
    allowed_ports: tuple[int, ...] = (80, 443)
    allow_loopback: bool = False
    retries: int = 2
    backoff_s: float = 0.2
    s3_buckets: tuple[str, ...] = ()
    resolver: Resolver | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_config(cls, config: Config) -> FetchPolicy:
        return cls(
            max_bytes=config.max_image_bytes,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            max_redirects=config.max_redirects,
            allowed_ports=config.allowed_ports,
            allow_loopback=config.allow_loopback_for_tests,
            retries=config.fetch_retries,
            s3_buckets=config.s3_allowed_buckets,
        )

    def allows_address(self, address: str) -> bool:
        """Whether a connection to ``address`` is allowed."""
        return addresses.allowed(address, allow_loopback=self.allow_loopback)
