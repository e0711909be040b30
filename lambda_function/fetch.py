"""Fetch an image by URL without letting the URL reach anything it should not.

``http``/``https`` go through the standard library only, one hop at a time:

1. the URL is checked: scheme, no user info, an allowed port;
2. its host is resolved **once**, and every address must be public (``is_global``, with
   IPv4 unwrapped from IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 IPv6);
3. the socket connects to that checked address (no second lookup, so DNS rebinding
   cannot swap it), and the peer actually connected is checked again, while the
   hostname still goes in the ``Host`` header, the TLS SNI and the certificate check;
4. a redirect repeats all of this for its target (at most ``max_redirects``).

A host that is refused and a host that does not resolve get the same answer, so the
service cannot be used to map which internal names exist. Transient upstream failures
(a refused or reset connection, HTTP 429/502/503/504) are retried, at most ``retries``
times, after a jittered backoff (or the ``Retry-After`` asked for) that must fit before
the deadline, against the same
checked addresses (never a second lookup); nothing else is retried.

The body is read with ``Accept-Encoding: identity`` (nothing is ever decompressed),
refused up front when ``Content-Length`` exceeds the byte cap and cut off while
streaming when the server sends more. Every socket operation has a timeout, and a
watchdog shuts the socket at the overall deadline, so a server that drips one byte
at a time cannot hold the function. Proxy environment variables are ignored
(``http.client`` never reads them). ``s3://bucket/key`` goes through boto3, only for
buckets on the allow-list, with a ``HEAD`` size check before the download and botocore
timeouts no longer than the time left.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import math
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from lambda_function.config import Config
from lambda_function.errors import (
    BadRequestError,
    PayloadTooLargeError,
    ServiceError,
    UnprocessableError,
    UpstreamTimeoutError,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "fashion-classifier/0.1 (+image fetcher)"
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")
MIN_ATTEMPT_S = 0.25
"""A retry starts only if at least this much time is left after its backoff."""
_CHUNK = 64 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=?~-._"  # what may stay as is; anything else (non-ASCII) is quoted
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for a TCP connection on ``port``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch. ``resolver`` (default :func:`resolve`, looked up at call time)
    and ``ssl_context`` are injectable for tests."""

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
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self.allow_loopback and ip.is_loopback:
            return True
        return is_public(ip)


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address, looking inside IPv6 wrappers of IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        if ip.scope_id:
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _NAT64) or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def fetch(url: str, policy: FetchPolicy, deadline: float) -> bytes:
    """The bytes at ``url`` (http, https or s3), by ``deadline`` (``time.monotonic()``)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise BadRequestError(
            f"Expected a URL of 1 to {MAX_URL_LENGTH} characters.", code="invalid_url"
        )
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "s3":
        return fetch_s3(url, policy, deadline)
    return fetch_http(url, policy, deadline)


def fetch_http(url: str, policy: FetchPolicy, deadline: float) -> bytes:
    """Follow at most ``policy.max_redirects`` redirects, checking every hop."""
    current = url
    for hop in range(policy.max_redirects + 1):
        try:
            target = _Target.parse(current, policy)
            addresses = _resolve_checked(target, policy, deadline)
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
        current = urljoin(current, result)
    raise UnprocessableError(
        f"Expected at most {policy.max_redirects} redirects. {url} redirected more.",
        code="too_many_redirects",
    )


def _get_with_retries(
    target: _Target, addresses: list[str], policy: FetchPolicy, deadline: float
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


@dataclass(frozen=True)
class _Target:
    url: str
    https: bool
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str, policy: FetchPolicy) -> _Target:
        """Check everything that can be checked before a lookup."""
        if len(url) > MAX_URL_LENGTH or any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise BadRequestError(
                "Expected a URL without spaces or control characters, "
                f"at most {MAX_URL_LENGTH} long.",
                code="invalid_url",
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise BadRequestError(f"Malformed URL {url!r}: {exc}", code="invalid_url") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise BadRequestError(
                f"Expected an http, https or s3 URL. Received scheme {scheme!r}.",
                code="invalid_url",
            )
        if "@" in parts.netloc:
            raise BadRequestError(
                "URLs with user info (user@host) are refused.",
                code="invalid_url",
            )
        host = parts.hostname or ""
        if not host:
            raise BadRequestError(f"Expected a host in {url!r}.", code="invalid_url")
        host = _ascii_host(host)
        port = port or (443 if scheme == "https" else 80)
        if port not in policy.allowed_ports and not policy.allow_loopback:
            raise _port_refused(port, policy)
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        return cls(url=url, https=scheme == "https", host=host, port=port, path=path)


def _ascii_host(host: str) -> str:
    if ":" in host:  # an IPv6 literal (urlsplit took its brackets off)
        if "%" in host:
            raise BadRequestError("IPv6 zone identifiers are refused.", code="invalid_url")
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise BadRequestError(f"Malformed host name {host!r}.", code="invalid_url") from exc
    if not _HOST_NAME.fullmatch(ascii_host):  # IDNA lets spaces and other oddities through
        raise BadRequestError(f"Malformed host name {host!r}.", code="invalid_url")
    return ascii_host


def _port_refused(port: int, policy: FetchPolicy) -> BadRequestError:
    allowed = " or ".join(map(str, policy.allowed_ports))
    return BadRequestError(f"Expected port {allowed}. Received: {port}", code="url_not_allowed")


def _resolve_checked(target: _Target, policy: FetchPolicy, deadline: float) -> list[str]:
    """Resolve once; refuse unless every address is allowed; the addresses to try, in order."""
    timeout = min(policy.connect_timeout_s, _remaining(deadline))
    resolver = policy.resolver or resolve
    try:
        addresses = _call_with_timeout(resolver, timeout, target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise not_fetchable(target.host) from exc
    if not addresses or not all(policy.allows_address(address) for address in addresses):
        raise not_fetchable(target.host)
    if target.port not in policy.allowed_ports and not all(
        ipaddress.ip_address(address).is_loopback for address in addresses
    ):
        raise _port_refused(target.port, policy)
    return list(dict.fromkeys(addresses))


def not_fetchable(host: str) -> BadRequestError:
    """The one answer for a host that is refused *or* does not resolve: no oracle for
    which internal names exist, no echo of the addresses they have."""
    return BadRequestError(
        f"{host[:255]!r} is not a public internet host; only those are fetched.",
        code="url_not_allowed",
    )


MAX_PENDING_LOOKUPS = 8
_lookup_slots = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)
"""A lookup abandoned at its deadline keeps its thread until ``getaddrinfo`` returns; this
bounds how many such threads a DNS outage can pile up in one warm container."""


def _call_with_timeout(function: Callable[..., Any], timeout: float, *args: Any) -> Any:
    """``getaddrinfo`` has no timeout of its own: run it where we can stop waiting."""
    outcome: dict[str, Any] = {}
    if not _lookup_slots.acquire(blocking=False):
        raise UpstreamTimeoutError(
            f"{MAX_PENDING_LOOKUPS} earlier name lookups have not returned yet; "
            f"not resolving {args[0]!r}."
        )

    def run() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            outcome["error"] = exc
        finally:
            _lookup_slots.release()

    thread = threading.Thread(target=run, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise UpstreamTimeoutError(f"Resolving {args[0]!r} took longer than {timeout:.1f} s.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamTimeoutError("The time left to fetch the image ran out.")
    return remaining


class _Watchdog:
    """Shuts a connection's socket at the deadline, whatever call is blocked on it."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.connection: http.client.HTTPConnection | None = None
        # The response keeps the socket after http.client drops ``connection.sock``.
        self.sock: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        sock = self.sock or (self.connection.sock if self.connection is not None else None)
        if sock is not None:
            # The plain-socket shutdown, also on an SSLSocket: it wakes a blocked read.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _get(
    target: _Target, addresses: list[str], policy: FetchPolicy, deadline: float
) -> bytes | str:
    """One GET from the checked ``addresses``: the body, or the ``Location`` of a redirect."""
    connection = _connection(target, addresses, policy, deadline)
    with _Watchdog(deadline) as watchdog:
        watchdog.connection = connection
        try:
            connection.request("GET", target.path, headers=_REQUEST_HEADERS)
            watchdog.sock = connection.sock
            _refresh_timeout(connection, policy, deadline)
            response = connection.getresponse()
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


def _too_slow(target: _Target) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(f"{target.host} did not send the image in time.")


_REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "image/*",
    "Accept-Encoding": "identity",
    "Connection": "close",
}


def _connection(
    target: _Target, addresses: list[str], policy: FetchPolicy, deadline: float
) -> http.client.HTTPConnection:
    """A connection to ``target.host`` whose socket goes to one of the checked ``addresses``."""
    timeout = min(policy.connect_timeout_s, _remaining(deadline))
    connection: http.client.HTTPConnection
    if target.https:
        context = policy.ssl_context or _default_ssl_context()
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def create_connection(
        _host_port: object, timeout: float | None = None, source_address: Any = None
    ) -> socket.socket:
        sock = _connect_first(addresses, target.port, policy, deadline, source_address)
        peer = sock.getpeername()[0]
        if not policy.allows_address(peer):
            sock.close()
            raise not_fetchable(target.host)
        return sock

    connection._create_connection = create_connection  # type: ignore[attr-defined]
    return connection


def _connect_first(
    addresses: list[str], port: int, policy: FetchPolicy, deadline: float, source: Any
) -> socket.socket:
    """The first of ``addresses`` that accepts (an IPv6 one may have no route from here)."""
    error: OSError = OSError("no address")
    for address in addresses:
        timeout = min(policy.connect_timeout_s, _remaining(deadline))
        try:
            return socket.create_connection((address, port), timeout, source)
        except OSError as exc:  # the last error (a timeout: 504) speaks for all
            error = exc
    raise error


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _refresh_timeout(
    connection: http.client.HTTPConnection, policy: FetchPolicy, deadline: float
) -> None:
    if connection.sock is not None:
        connection.sock.settimeout(min(policy.read_timeout_s, _remaining(deadline)))


def _read_response(
    target: _Target,
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
        error = UnprocessableError(
            f"Expected HTTP 200 from {target.host}. Received: {response.status} {response.reason}",
            code="upstream_status",
        )
        error.transient = response.status in TRANSIENT_STATUSES
        retry_after = (response.getheader("Retry-After") or "").strip()
        error.retry_after_s = float(retry_after) if retry_after.isdigit() else 0.0
        raise error
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
    target: _Target, response: http.client.HTTPResponse, policy: FetchPolicy
) -> int | None:
    values = set(response.headers.get_all("Content-Length") or [])
    if len(values) > 1:
        raise UnprocessableError(
            f"{target.host} sent conflicting Content-Length headers.", code="bad_response"
        )
    if response.length is not None and response.length > policy.max_bytes:
        raise _too_large(target, policy, f"declared {response.length:,} bytes")
    return response.length


def _too_large(target: _Target, policy: FetchPolicy, what: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Expected an image of at most {policy.max_bytes:,} bytes. {target.host} {what}."
    )


def _transport_error(target: _Target, exc: BaseException) -> ServiceError:
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return UnprocessableError(f"TLS with {target.host} failed: {exc}", code="tls_failed")
    if isinstance(exc, http.client.HTTPException | ValueError):
        return UnprocessableError(
            f"{target.host} sent a malformed HTTP response: {exc!r}", code="bad_response"
        )
    error = UnprocessableError(f"Could not fetch from {target.host}: {exc}", code="connect_failed")
    error.transient = True  # refused, reset, unreachable: worth another try
    return error


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
    left = math.ceil(_remaining(deadline))
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
