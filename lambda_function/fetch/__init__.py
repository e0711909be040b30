"""Fetch an image by URL without letting the URL reach anything it should not.

``http``/``https`` go through the standard library only, one hop at a time
(:mod:`.http`):

1. the URL is checked: scheme, no user info, an allowed port (:mod:`.url`);
2. its host is resolved **once**, and every address must be public (:mod:`.addresses`,
   with IPv4 unwrapped from IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 IPv6);
3. the socket connects to that checked address (no second lookup, so DNS rebinding
   cannot swap it), and the peer actually connected is checked again, while the
   hostname still goes in the ``Host`` header, the TLS SNI and the certificate check;
4. a redirect repeats all of this for its target (at most ``max_redirects``).

A host that is refused and a host that does not resolve get the same answer, so the
service cannot be used to map which internal names exist (:mod:`.dns`). Transient upstream
failures (a refused or reset connection, HTTP 429/502/503/504) are retried, at most
``retries`` times, after a jittered backoff (or the ``Retry-After`` asked for) that must
fit before the deadline, against the same checked addresses (never a second lookup);
nothing else is retried.

The body is read with ``Accept-Encoding: identity`` (nothing is ever decompressed),
refused up front when ``Content-Length`` exceeds the byte cap and cut off while
streaming when the server sends more. Every socket operation has a timeout, and a
watchdog shuts the socket at the overall deadline, so a server that drips one byte
at a time cannot hold the function. Proxy environment variables are ignored
(``http.client`` never reads them). ``s3://bucket/key`` goes through boto3 (:mod:`.s3`),
only for buckets on the allow-list, with a ``HEAD`` size check before the download and
botocore timeouts no longer than the time left.
"""

from __future__ import annotations

from lambda_function.fetch import http, s3
from lambda_function.fetch.dns import LookupShare
from lambda_function.fetch.policy import FetchPolicy
from lambda_function.fetch.url import MAX_URL_LENGTH, check_length

__all__ = ["MAX_URL_LENGTH", "FetchPolicy", "LookupShare", "fetch"]


def fetch(
    url: str, policy: FetchPolicy, deadline: float, lookups: LookupShare | None = None
) -> bytes:
    """The bytes at ``url`` (http, https or s3), by ``deadline`` (``time.monotonic()``).
    ``lookups`` is the request's share of pending name lookups (one per request)."""
    check_length(url)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "s3":
        return s3.fetch_s3(url, policy, deadline)
    return http.fetch_http(url, policy, deadline, lookups)
