"""An http(s) URL checked for everything that can be checked before a lookup."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from lambda_function.errors import BadRequestError
from lambda_function.fetch.policy import FetchPolicy

MAX_URL_LENGTH = 2048
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_PATH_SAFE = "/%:@!$&'()*+,;=?~-._"  # what may stay as is; anything else (non-ASCII) is quoted


@dataclass(frozen=True)
class Target:
    """One hop's URL: scheme, ASCII host, port and the quoted path to ask for."""

    url: str
    https: bool
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str, policy: FetchPolicy) -> Target:
        """Check everything that can be checked before a lookup."""
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise BadRequestError(
                "Expected a URL without spaces or control characters.", code="invalid_url"
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
            raise port_refused(port, policy)
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        return cls(url=url, https=scheme == "https", host=host, port=port, path=path)


def check_length(url: object) -> str:
    """``url`` when it is text (no lone surrogates) of 1 to :data:`MAX_URL_LENGTH` characters."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise BadRequestError(
            f"Expected a URL of 1 to {MAX_URL_LENGTH} characters.", code="invalid_url"
        )
    try:
        url.encode("utf-8")
    except UnicodeEncodeError as exc:  # "\ud800" in JSON: not a character at all
        raise BadRequestError(
            "Expected a URL of Unicode text. Received a lone surrogate.", code="invalid_url"
        ) from exc
    return url


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


def port_refused(port: int, policy: FetchPolicy) -> BadRequestError:
    allowed = " or ".join(map(str, policy.allowed_ports))
    return BadRequestError(f"Expected port {allowed}. Received: {port}", code="url_not_allowed")
