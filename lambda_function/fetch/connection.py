"""Connections pinned to checked addresses, a deadline watchdog, interim responses skipped."""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time

from lambda_function.fetch.dns import not_fetchable, remaining
from lambda_function.fetch.policy import FetchPolicy
from lambda_function.fetch.url import Target


def pinned_connection(
    target: Target, addresses: list[str], policy: FetchPolicy, deadline: float
) -> http.client.HTTPConnection:
    """A connection to ``target.host`` whose socket goes to one of the checked ``addresses``."""
    timeout = min(policy.connect_timeout_s, remaining(deadline))
    pin = _Pin(target, addresses, policy, deadline)
    if target.https:
        return PinnedHTTPSConnection(pin, timeout, policy.ssl_context or _default_ssl_context())
    return PinnedHTTPConnection(pin, timeout)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Pin:
    """Opens the socket for a connection: to the first checked address that accepts,
    never to a second lookup of the host name, and only if the peer is allowed."""

    def __init__(
        self, target: Target, addresses: list[str], policy: FetchPolicy, deadline: float
    ) -> None:
        self.target, self.addresses, self.policy, self.deadline = (
            target,
            addresses,
            policy,
            deadline,
        )

    def connect(self) -> socket.socket:
        error: OSError = OSError("no address")
        for address in self.addresses:  # an IPv6 one may have no route from here
            timeout = min(self.policy.connect_timeout_s, remaining(self.deadline))
            try:
                sock = socket.create_connection((address, self.target.port), timeout)
            except OSError as exc:  # the last error (a timeout: 504) speaks for all
                error = exc
                continue
            if not self.policy.allows_address(sock.getpeername()[0]):
                sock.close()
                raise not_fetchable(self.target.host)
            return sock
        raise error


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to ``host`` (``Host`` header) over a socket to a checked address."""

    def __init__(self, pin: _Pin, timeout: float) -> None:
        super().__init__(pin.target.host, pin.target.port, timeout=timeout)
        self.pin = pin

    def connect(self) -> None:
        self.sock = self.pin.connect()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address, with ``host`` for the SNI and the certificate check."""

    def __init__(self, pin: _Pin, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(pin.target.host, pin.target.port, timeout=timeout, context=context)
        self.pin, self.tls = pin, context

    def connect(self) -> None:
        self.sock = self.tls.wrap_socket(self.pin.connect(), server_hostname=self.host)


class Watchdog:
    """Shuts a connection's socket at the deadline, whatever call is blocked on it."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.connection: http.client.HTTPConnection | None = None
        # The response keeps the socket after http.client drops ``connection.sock``.
        self.sock: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
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


MAX_INTERIM_RESPONSES = 8


class _Rest:
    """What follows an interim response on the same connection, for the next response."""

    def __init__(self, fp: object) -> None:
        self.fp = fp

    def makefile(self, mode: str) -> object:
        return self.fp


def final_response(response: http.client.HTTPResponse) -> http.client.HTTPResponse:
    """Skip interim 1xx responses (103 Early Hints ...); http.client skips only 100."""
    for _ in range(MAX_INTERIM_RESPONSES):
        if not 100 <= response.status < 200 or response.status == 101:
            return response
        rest = response.fp
        response.fp = None  # type: ignore[assignment]  # handed over: closing the 1xx keeps it
        response = http.client.HTTPResponse(_Rest(rest), method="GET")  # type: ignore[arg-type]
        response.begin()
    raise http.client.HTTPException(f"more than {MAX_INTERIM_RESPONSES} interim responses")
