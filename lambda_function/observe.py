"""The one structured log line per request: what came in, how long each stage took, the outcome.

Only hosts are logged, never paths or query strings (a presigned URL's signature lives
there), and never error messages (they may quote the URL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lambda_function.events import Request

MAX_HOST_CHARS = 255


@dataclass
class ItemTrace:
    """One image: its bytes, its decoded size and where the time went (filled by the service)."""

    bytes: int = 0
    width: int = 0
    height: int = 0
    fetch_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass
class RequestTrace:
    """Everything the log line says about one request."""

    started: float = field(default_factory=time.monotonic)
    kind: str = ""
    hosts: list[str] = field(default_factory=list)
    items: list[ItemTrace] = field(default_factory=list)
    inference_ms: float = 0.0

    def describe(self, request: Request) -> None:
        """Record the kind of input and the hosts it names (one item trace per image)."""
        urls = [item.url for item in request.items if item.url]
        if request.batch:
            self.kind = "batch"
        elif urls:
            self.kind = "s3" if urls[0].lower().startswith("s3:") else "url"
        else:
            self.kind = "image"
        self.hosts = [host_of(url) for url in urls]
        self.items = [ItemTrace() for _ in request.items]

    def log_line(
        self, *, request_id: str, source: str, status: int, code: str, cold_start: bool
    ) -> dict[str, Any]:
        decoded = [item for item in self.items if item.width]
        return {
            "request_id": request_id,
            "source": source,
            "input": self.kind or "unparsed",
            "hosts": self.hosts,
            "items": len(self.items),
            "bytes": sum(item.bytes for item in self.items),
            "image_sizes": [f"{item.width}x{item.height}" for item in decoded],
            "fetch_ms": _ms(max((item.fetch_ms for item in self.items), default=0.0)),
            "decode_ms": _ms(sum(item.decode_ms for item in self.items)),
            "inference_ms": _ms(self.inference_ms),
            "total_ms": _ms((time.monotonic() - self.started) * 1000),
            "status": status,
            "code": code,
            "cold_start": cold_start,
        }


def host_of(url: str) -> str:
    """The host (or S3 bucket) of ``url``, lower-case and bounded; "" when there is none."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return host[:MAX_HOST_CHARS]


def elapsed_ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


def _ms(value: float) -> float:
    return round(value, 1)
