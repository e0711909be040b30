"""Every failure the service answers, and the one place that maps them to HTTP statuses.

Modules raise a :class:`ServiceError` subclass (or a preprocessing ``ImageError``);
:func:`to_service_error` turns anything raised into the answer the caller sees. Only an
exception we did not foresee becomes a 500, and its details stay in the log.

What the caller reads is a stable ``code`` and a message about *their* input, at most
:data:`MAX_MESSAGE_CHARS` long. Internals (model paths, S3 bucket names and error codes,
object sizes, library error text) go in ``detail``, which is logged, never answered. Inside
Lambda every log record carries the invocation's request id, the one the answer names.
"""

from __future__ import annotations

import logging
from typing import Any

from lambda_function.image_errors import ImageError

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1024
"""No error message is longer: an answer stays far below Lambda's 6 MB response limit."""


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text) - limit + 40:,} more characters)"
    return text[: limit - len(note)] + note


class ServiceError(Exception):
    """A failure with an HTTP status and a stable, machine-readable ``code``."""

    status = 500
    code = "internal_error"
    transient = False
    """Whether trying again may succeed (the fetcher retries only these)."""
    retry_after_s = 0.0
    """How long the upstream asked us to wait first (its ``Retry-After``)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        transient: bool = False,
        retry_after_s: float = 0.0,
        detail: str = "",
    ) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message
        self.detail = detail
        """For the log only: what the caller must not see (paths, buckets, library text)."""
        self.logged = False
        if code is not None:
            self.code = code
        self.transient = transient
        self.retry_after_s = retry_after_s

    def to_payload(self, request_id: str) -> dict[str, Any]:
        """The error body of the API contract."""
        return {"error": {"code": self.code, "message": self.message}, "request_id": request_id}


class BadRequestError(ServiceError):
    """400: the request itself is malformed or asks for something we refuse."""

    status = 400
    code = "bad_request"


class PayloadTooLargeError(ServiceError):
    """413: too many bytes or too many pixels."""

    status = 413
    code = "image_too_large"


class UnsupportedImageError(ServiceError):
    """415: the bytes are not an image format we decode."""

    status = 415
    code = "unsupported_image"


class UnprocessableError(ServiceError):
    """422: the image could not be fetched, or could not be decoded."""

    status = 422
    code = "fetch_failed"


class UpstreamTimeoutError(ServiceError):
    """504: the image's server (or the time left to this invocation) ran out."""

    status = 504
    code = "upstream_timeout"


class ModelUnavailableError(ServiceError):
    """500: the model could not be loaded: a deployment fault, not the caller's. The reason
    (a path, an S3 URI, onnxruntime's text) is the ``detail``, for the log only."""

    status = 500
    code = "model_unavailable"
    PUBLIC_MESSAGE = "The model is not available; the request id identifies the cause in the log."

    def __init__(self, reason: str) -> None:
        super().__init__(self.PUBLIC_MESSAGE, detail=reason)

    def __str__(self) -> str:  # what the log and a local traceback show
        return self.detail


IMAGE_ERRORS: dict[str, type[ServiceError]] = {
    "empty_image": BadRequestError,
    "invalid_image": BadRequestError,
    "unsupported_image": UnsupportedImageError,
    "image_too_large": PayloadTooLargeError,
    "corrupt_image": UnprocessableError,
    "upstream_timeout": UpstreamTimeoutError,
}
"""Preprocessing's ``ImageError.code`` to the error class that answers it."""


def to_service_error(exc: BaseException) -> ServiceError:
    """The answer for ``exc``: itself, a mapped image error, or an opaque 500. Details the
    answer leaves out (``detail``, a library's own error text) are logged here, once."""
    if isinstance(exc, ServiceError):
        error = exc
    elif isinstance(exc, ImageError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else ""
        error = IMAGE_ERRORS.get(exc.code, BadRequestError)(str(exc), code=exc.code, detail=detail)
    else:
        logger.error("unexpected error", exc_info=exc)
        return ServiceError("Internal error; the request id identifies it in the function's log.")
    if error.detail and not error.logged:
        logger.warning("%s %s: %s", error.status, error.code, bounded(error.detail, 4096))
        error.logged = True
    return error
