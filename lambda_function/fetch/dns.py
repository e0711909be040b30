"""Name lookups with a timeout, fairly shared, and the one answer for a host we refuse.

``getaddrinfo`` has no timeout, so each lookup runs in a thread we can stop waiting for;
a thread abandoned at its deadline lives on until the resolver gives up. Two bounds keep
those threads from denying service:

* the container holds at most :data:`MAX_PENDING_LOOKUPS` lookups at once;
* one request holds at most :data:`LOOKUPS_PER_REQUEST` of them (its :class:`LookupShare`):
  its other names wait for its own lookups to return, or for its deadline. A batch of names
  that never resolve thus ties up two slots, not all of them, and a request takes at least
  the connect timeout (3 s) to abandon its two; with the resolver's own give-up (~10-30 s)
  a caller sending requests one after another cannot fill the container's pool.

A name that does not exist and a host we refuse get the same 400 (no oracle for internal
names). A *temporary* resolver failure (``EAI_AGAIN``) is a 504 the caller may retry: it
says nothing about whether a name exists.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from lambda_function.errors import BadRequestError, UpstreamTimeoutError
from lambda_function.fetch.policy import FetchPolicy
from lambda_function.fetch.url import Target, port_refused

MAX_PENDING_LOOKUPS = 16
_lookup_slots = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)
"""A lookup abandoned at its deadline keeps its thread until ``getaddrinfo`` returns; this
bounds how many such threads a DNS outage can pile up in one warm container."""

LOOKUPS_PER_REQUEST = 2


class LookupShare:
    """One request's share of the pending lookups (one per request, shared by its items)."""

    def __init__(self, limit: int = LOOKUPS_PER_REQUEST) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self, timeout: float) -> bool:
        return self._slots.acquire(timeout=max(0.0, timeout))

    def release(self) -> None:
        self._slots.release()


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for a TCP connection on ``port``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def resolve_checked(
    target: Target, policy: FetchPolicy, deadline: float, share: LookupShare | None = None
) -> list[str]:
    """Resolve once; refuse unless every address is allowed; the addresses to try, in order."""
    timeout = min(policy.connect_timeout_s, remaining(deadline))
    resolver = policy.resolver or resolve
    try:
        addresses = _call_with_timeout(
            resolver, timeout, share or LookupShare(), target.host, target.port
        )
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise UpstreamTimeoutError(
                f"Resolving {target.host[:255]!r} failed for now; try again.",
                transient=True,
                detail=str(exc),
            ) from exc
        raise not_fetchable(target.host) from exc
    except (OSError, UnicodeError) as exc:
        raise not_fetchable(target.host) from exc
    if not addresses or not all(policy.allows_address(address) for address in addresses):
        raise not_fetchable(target.host)
    if target.port not in policy.allowed_ports and not all(
        ipaddress.ip_address(address).is_loopback for address in addresses
    ):
        raise port_refused(target.port, policy)
    return list(dict.fromkeys(addresses))


def not_fetchable(host: str) -> BadRequestError:
    """The one answer for a host that is refused *or* does not resolve: no oracle for
    which internal names exist, no echo of the addresses they have."""
    return BadRequestError(
        f"{host[:255]!r} is not a public internet host; only those are fetched.",
        code="url_not_allowed",
    )


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; a 504 when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise UpstreamTimeoutError("The time left to fetch the image ran out.")
    return left


def _call_with_timeout(
    function: Callable[..., Any], timeout: float, share: LookupShare, *args: Any
) -> Any:
    """``getaddrinfo`` has no timeout of its own: run it where we can stop waiting."""
    outcome: dict[str, Any] = {}
    until = time.monotonic() + timeout
    if not share.acquire(timeout):
        raise UpstreamTimeoutError(
            f"This request's {share.limit} earlier name lookups have not returned yet; "
            f"not resolving {args[0]!r}."
        )
    if not _lookup_slots.acquire(blocking=False):
        share.release()
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
            share.release()

    thread = threading.Thread(target=run, name="resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, until - time.monotonic()))
    if thread.is_alive():
        raise UpstreamTimeoutError(f"Resolving {args[0]!r} took longer than {timeout:.1f} s.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
