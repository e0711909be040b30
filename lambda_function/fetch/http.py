"""One http(s) fetch: redirects checked hop by hop, retries within the deadline, capped body."""

from __future__ import annotations

import http.client
import random
import ssl
import time
from urllib.parse import urljoin

from lambda_function.errors import (
    BadRequestError,
    PayloadTooLargeError,
    ServiceError,
    UnprocessableError,
    UpstreamTimeoutError,
)
from lambda_function.fetch.connection import Watchdog, final_response, pinned_connection
from lambda_function.fetch.dns import LookupShare, remaining, resolve_checked
from lambda_function.fetch.policy import FetchPolicy
from lambda_function.fetch.url import Target, check_length

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "fashion-classifier/0.1 (+image fetcher)"
MIN_ATTEMPT_S = 0.25
"""A retry starts only if at least this much time is left after its backoff."""
_CHUNK = 64 * 1024
_REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "image/*",
    "Accept-Encoding": "identity",
    "Connection": "close",
}


def fetch_http(
    url: str, policy: FetchPolicy, deadline: float, share: LookupShare | None = None
) -> bytes:
    """Follow at most ``policy.max_redirects`` redirects, checking every hop."""
    current = url
    for hop in range(policy.max_redirects + 1):
        try:
            target = Target.parse(check_length(current), policy)
            addresses = resolve_checked(target, policy, deadline, share)
        except BadRequestError as exc:
            if hop == 0:
                raise
            raise UnprocessableError(
                f"{url} redirected to a refused location: {exc.message}",
                code="redirect_not_allowed",
            ) from exc
        result = _get_with_retries(target, addresses, policy, deadline)
        if isinstance(result, bytes):
            if not result:
                raise UnprocessableError(
                    f"{target.host} sent an empty body.", code="empty_response"
                )
            return result
        current = _joined(url, current, result)
    raise UnprocessableError(
        f"Expected at most {policy.max_redirects} redirects. {url} redirected more.",
        code="too_many_redirects",
    )


def _joined(url: str, current: str, location: str) -> str:
    """The absolute URL a ``Location`` names; a malformed one ends the fetch (422)."""
    try:
        return urljoin(current, location)
    except ValueError as exc:
        raise UnprocessableError(
            f"{url} redirected to a malformed location.",
            code="redirect_not_allowed",
            detail=f"Location {location[:512]!r}: {exc}",
        ) from exc


def _get_with_retries(
    target: Target, addresses: list[str], policy: FetchPolicy, deadline: float
) -> bytes | str:
    """:func:`_get`, again after a jittered backoff while the failure is transient."""
    for attempt in range(policy.retries + 1):
        try:
            return _get(target, addresses, policy, deadline)
        except ServiceError as exc:
            jitter = random.uniform(0, policy.backoff_s * 2**attempt)  # "full jitter"
            delay = max(jitter, exc.retry_after_s)
            left = deadline - time.monotonic()
            if not exc.transient or attempt == policy.retries or delay + MIN_ATTEMPT_S > left:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _get(target: Target, addresses: list[str], policy: FetchPolicy, deadline: float) -> bytes | str:
    """One GET from the checked ``addresses``: the body, or the ``Location`` of a redirect."""
    connection = pinned_connection(target, addresses, policy, deadline)
    with Watchdog(deadline) as watchdog:
        watchdog.connection = connection
        try:
            connection.request("GET", target.path, headers=_REQUEST_HEADERS)
            watchdog.sock = connection.sock
            _refresh_timeout(connection, policy, deadline)
            response = final_response(connection.getresponse())
            result = _read_response(target, response, connection, policy, deadline)
        except (ServiceError, OSError, http.client.HTTPException, ValueError) as exc:
            # A shut socket reads as EOF or a reset: the watchdog says it was the deadline.
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise _too_slow(target) from exc
            if isinstance(exc, ServiceError):
                raise
            raise _transport_error(target, exc) from exc
        finally:
            connection.close()
    if watchdog.fired:
        raise _too_slow(target)
    return result


def _too_slow(target: Target) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(f"{target.host} did not send the image in time.")


def _refresh_timeout(
    connection: http.client.HTTPConnection, policy: FetchPolicy, deadline: float
) -> None:
    if connection.sock is not None:
        connection.sock.settimeout(min(policy.read_timeout_s, remaining(deadline)))


def _read_response(
    target: Target,
    response: http.client.HTTPResponse,
    connection: http.client.HTTPConnection,
    policy: FetchPolicy,
    deadline: float,
) -> bytes | str:
    if response.status in REDIRECT_STATUSES:
        location = response.getheader("Location")
        if not location:
            raise UnprocessableError(
                f"{target.host} answered {response.status} without a Location.",
                code="upstream_status",
            )
        return location
    if response.status != 200:
        retry_after = (response.getheader("Retry-After") or "").strip()
        raise UnprocessableError(
            f"Expected HTTP 200 from {target.host}. Received: {response.status} {response.reason}",
            code="upstream_status",
            transient=response.status in TRANSIENT_STATUSES,
            retry_after_s=float(retry_after) if retry_after.isdigit() else 0.0,
        )
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnprocessableError(
            f"Expected an unencoded body (we asked for identity). Received Content-Encoding "
            f"{encoding!r}.",
            code="content_encoding",
        )
    framing = (response.getheader("Transfer-Encoding") or "identity").strip().lower()
    if framing not in ("identity", "chunked"):
        raise UnprocessableError(
            f"Expected a chunked or plain body. Received Transfer-Encoding {framing!r}.",
            code="content_encoding",
        )
    declared = _declared_length(target, response, policy)
    chunks: list[bytes] = []
    total = 0
    while True:
        _refresh_timeout(connection, policy, deadline)
        chunk = response.read1(min(_CHUNK, policy.max_bytes + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise _too_large(target, policy, "sent more")
        chunks.append(chunk)
    if declared is not None and total != declared:
        raise UnprocessableError(
            f"{target.host} declared {declared} bytes and sent {total}.", code="incomplete_body"
        )
    return b"".join(chunks)


def _declared_length(
    target: Target, response: http.client.HTTPResponse, policy: FetchPolicy
) -> int | None:
    values = set(response.headers.get_all("Content-Length") or [])
    if len(values) > 1:
        raise UnprocessableError(
            f"{target.host} sent conflicting Content-Length headers.", code="bad_response"
        )
    if response.length is not None and response.length > policy.max_bytes:
        raise _too_large(target, policy, f"declared {response.length:,} bytes")
    return response.length


def _too_large(target: Target, policy: FetchPolicy, what: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Expected an image of at most {policy.max_bytes:,} bytes. {target.host} {what}."
    )


def _transport_error(target: Target, exc: BaseException) -> ServiceError:
    """The answer for a failed exchange; the library's own words go to the log only."""
    detail = f"{target.host}: {type(exc).__name__}: {exc}"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return UnprocessableError(
            f"TLS with {target.host} failed (certificate or handshake).",
            code="tls_failed",
            detail=detail,
        )
    if isinstance(exc, http.client.HTTPException | ValueError):
        return UnprocessableError(
            f"{target.host} sent a malformed HTTP response.", code="bad_response", detail=detail
        )
    # refused, reset, unreachable: worth another try
    return UnprocessableError(
        f"Could not connect to {target.host}.",
        code="connect_failed",
        transient=True,
        detail=detail,
    )
