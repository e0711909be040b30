"""Every failure the service answers, and the one place that maps them to HTTP statuses.

Modules raise a :class:`ServiceError` subclass (or a preprocessing ``ImageError``);
:func:`to_service_error` turns anything raised into the answer the caller sees. Only an
exception we did not foresee becomes a 500, and its details stay in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from lambda_function.preprocessing import ImageError

logger = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(message)
        self.message = message
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
    """500: the model could not be loaded: a deployment fault, not the caller's."""

    status = 500
    code = "model_unavailable"


IMAGE_ERRORS: dict[str, type[ServiceError]] = {
    "empty_image": BadRequestError,
    "invalid_image": BadRequestError,
    "unsupported_image": UnsupportedImageError,
    "image_too_large": PayloadTooLargeError,
    "corrupt_image": UnprocessableError,
}
"""Preprocessing's ``ImageError.code`` to the error class that answers it."""


def to_service_error(exc: BaseException) -> ServiceError:
    """The answer for ``exc``: itself, a mapped image error, or an opaque 500."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, ImageError):
        return IMAGE_ERRORS.get(exc.code, BadRequestError)(str(exc), code=exc.code)
    logger.error("unexpected error", exc_info=exc)
    return ServiceError("Internal error; the request id identifies it in the function's log.")
