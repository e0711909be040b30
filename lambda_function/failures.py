"""The two kinds of failure on the upload and backfill path, and which AWS errors are which.

A :class:`PermanentError` can never succeed for this object (not an image, too large,
corrupt, gone): it becomes an error row in the results table and is not retried. A
:class:`TransientError` may succeed later (throttling, a 5xx, a timeout, a missing
permission an operator will fix): it is raised, so Lambda's asynchronous retries (or the
backfill state machine's ``Retry``) try again, and what still fails lands in the on-failure
queue. docs/upload.md has the full table.
"""

from __future__ import annotations

from typing import Any

PERMANENT_S3_ERRORS = {
    "NoSuchKey": "not_found",
    "NoSuchVersion": "not_found",
    "404": "not_found",
    "PreconditionFailed": "superseded",
    "412": "superseded",
    "InvalidObjectState": "archived",
}
"""S3 error codes that no retry can fix, to the error code of the row they leave."""


class PermanentError(Exception):
    """This object can never be classified: its row records ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientError(Exception):
    """Trying again later may succeed: raised out of the handler so that AWS retries."""


def from_s3_error(exc: Exception, what: str) -> PermanentError | TransientError:
    """The failure that a boto3 exception from ``GetObject`` on ``what`` stands for."""
    code = aws_error_code(exc)
    if code in PERMANENT_S3_ERRORS:
        return PermanentError(PERMANENT_S3_ERRORS[code], f"S3 answered {code} for {what}.")
    return TransientError(f"S3 failed for {what}: {code or type(exc).__name__}")


def aws_error_code(exc: Exception) -> str:
    """A botocore ``ClientError``'s error code ("" for transport errors and the like)."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
