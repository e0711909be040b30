"""Events in, answers out: direct invocations and API Gateway (HTTP API v2, REST API v1).

Every shape becomes one :class:`Request` (a tuple of items, each a URL or image bytes),
and every answer goes back in the shape its caller expects.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from lambda_function.errors import BadRequestError, PayloadTooLargeError, UnsupportedImageError

DIRECT, HTTP_API, REST_API = "direct", "http_api", "rest_api"
JSON_TYPES = ("", "application/json", "text/plain")
RAW_TYPES = ("application/octet-stream",)


@dataclass(frozen=True)
class Item:
    """One image to classify: a URL to fetch, or the image's bytes."""

    url: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Request:
    items: tuple[Item, ...]
    batch: bool = False


def source_of(event: Any) -> str:
    """Which caller sent ``event``: API Gateway's HTTP API (v2), its REST API (v1), or direct."""
    if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
        if event.get("version") == "2.0":
            return HTTP_API
        if "httpMethod" in event:
            return REST_API
    return DIRECT


def parse(event: Any, source: str, *, max_bytes: int, max_batch: int) -> Request:
    """The request ``event`` carries; :class:`BadRequestError` and kin when it is malformed."""
    if source == DIRECT:
        return parse_payload(event, max_bytes=max_bytes, max_batch=max_batch)
    raw_headers = event.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise BadRequestError(
            f"Expected the event's headers as an object. Received: {type(raw_headers).__name__}",
            code="bad_request",
        )
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    body = event.get("body")
    if body is not None and not isinstance(body, str):
        raise BadRequestError(
            f"Expected the event's body as a string. Received: {type(body).__name__}",
            code="bad_request",
        )
    if not body:
        raise BadRequestError(
            'Expected a request body: JSON such as {"url": "https://..."}, or image bytes.',
            code="empty_body",
        )
    if event.get("isBase64Encoded"):
        raw = _b64decode(body, "the body", max_bytes=max_bytes)
    else:
        raw = _capped(body.encode("utf-8"), max_bytes)
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        return Request((Item(data=raw),))
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedImageError(
            f"Expected Content-Type application/json or image/*. Received: {content_type!r}",
            code="unsupported_media_type",
        )
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = _json_failure(exc)
        raise BadRequestError(f"Expected a JSON body. {reason}", code="invalid_json") from exc
    return parse_payload(payload, max_bytes=max_bytes, max_batch=max_batch)


def parse_payload(payload: Any, *, max_bytes: int, max_batch: int) -> Request:
    """``{"url": ...}``, ``{"urls": [...]}`` or ``{"image": "<base64>"}``."""
    keys = [key for key in ("url", "urls", "image") if isinstance(payload, dict) and key in payload]
    if len(keys) != 1:
        received = _keys(payload) if isinstance(payload, dict) else type(payload).__name__
        raise BadRequestError(
            f'Expected exactly one of "url", "urls" or "image". Received: {received}',
            code="bad_request",
        )
    value = payload[keys[0]]
    if keys[0] == "url":
        return Request((Item(url=_url(value, "url")),))
    if keys[0] == "image":
        if not isinstance(value, str):
            raise BadRequestError('Expected "image" as a base64 string.', code="invalid_base64")
        return Request((Item(data=_b64decode(value, '"image"', max_bytes=max_bytes)),))
    if not isinstance(value, list) or not 1 <= len(value) <= max_batch:
        raise BadRequestError(
            f'Expected "urls" as a list of 1 to {max_batch} URLs. '
            f"Received: {len(value) if isinstance(value, list) else type(value).__name__}",
            code="bad_request",
        )
    return Request(tuple(Item(url=_url(v, f"urls[{i}]")) for i, v in enumerate(value)), batch=True)


def respond(source: str, status: int, payload: dict[str, Any]) -> dict[str, Any]:
    """The answer in the caller's shape: the plain payload (plus ``status`` on errors) for a
    direct invocation, an HTTP response with a JSON body for API Gateway."""
    if source == DIRECT:
        return payload if status == 200 else {**payload, "status": status}
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(payload),
        "isBase64Encoded": False,
    }


def _json_failure(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "It nests too deeply."
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "It is not UTF-8 text."
    return "A number in it has too many digits."  # past Python's int-string limit


MAX_KEYS_SHOWN = 5


def _keys(payload: dict[Any, Any]) -> str:
    """The first few keys of ``payload``, each cut short, then how many more: bounded text."""
    shown = [repr(str(key)[:40]) for key in list(payload)[:MAX_KEYS_SHOWN]]
    more = len(payload) - len(shown)
    return "[" + ", ".join(shown) + (f", ... and {more:,} more" if more > 0 else "") + "]"


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"Expected {name} as a non-empty string.", code="invalid_url")
    return value.strip()


def _b64decode(text: Any, what: str, *, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise BadRequestError(f"Expected {what} as a base64 string.", code="invalid_base64")
    compact = "".join(text.split())
    if len(compact) // 4 * 3 > max_bytes + 2:
        raise PayloadTooLargeError(f"Expected an image of at most {max_bytes:,} bytes.")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(
            f"Expected {what} as standard base64. {exc}", code="invalid_base64"
        ) from exc
    return _capped(data, max_bytes)


def _capped(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"Expected an image of at most {max_bytes:,} bytes. Received {len(data):,}."
        )
    return data
