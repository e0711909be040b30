"""The Lambda entry point: adapt the event, call the service, map any error once.

Inside Lambda (``AWS_LAMBDA_RUNTIME_API`` is set) the model is loaded and warmed up at
import, during the init phase; if it cannot be, the import fails, so Lambda reports the
init error, counts it, and tries the init again on the next request. Elsewhere (tests, the
CLI) importing this module is cheap and the model loads on first use. Every request prints
one JSON line that is both its log record and its metrics (:mod:`lambda_function.observe`).
Uploads and backfill batches are the upload function's (``lambda_function.uploads``): sent
here, they are answered with a ``wrong_function`` error, never run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lambda_function import events, observe, suggestions, uploads
from lambda_function.errors import BadRequestError, to_service_error
from lambda_function.events import Request
from lambda_function.process import get_service, load_at_init
from lambda_function.service import Answer

__all__ = ["get_service", "lambda_handler"]

_process = {"cold": True}
"""Whether this process has answered a request yet (the log's ``cold_start``)."""


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Classify the image(s) ``event`` names; see docs/openapi.yaml for the contract."""
    started = time.monotonic()
    request_id = getattr(context, "aws_request_id", "") or str(uuid.uuid4())
    source = events.source_of(event)
    cold_start, _process["cold"] = _process["cold"], False
    request: Request | None = None
    answer: Answer | None = None
    try:
        _refuse_upload_events(event)
        service = get_service()
        config = service.config
        request = events.parse(
            event, source, max_bytes=config.upload_cap, max_batch=config.max_batch
        )
        answer = service.answer(request, service.deadline(_remaining_s(context)))
        if answer.error is not None:
            raise answer.error
        urls = [item.url or "" for item in request.items]
        payload = suggestions.answered(request_id, answer.payload, urls, source)
        status, code = 200, ""
    except Exception as exc:  # noqa: BLE001 - the one place where failures become answers
        error = to_service_error(exc)
        payload, status, code = error.to_payload(request_id), error.status, error.code
    line = observe.request_line(
        request_id=request_id,
        source=source,
        request=request,
        answer=answer,
        status=status,
        code=code,
        cold_start=cold_start,
        total_ms=(time.monotonic() - started) * 1000,
    )
    observe.emit(observe.with_metrics(line))
    return events.respond(source, status, payload)


def _refuse_upload_events(event: Any) -> None:
    """An S3 notification or a backfill batch belongs to the upload function: answering it
    here (a 400, logged and counted) loses nothing, raising would trip the errors alarm."""
    if uploads.is_s3_notification(event) or uploads.is_backfill_batch(event):
        kind = (
            "a backfill batch" if uploads.is_backfill_batch(event) else "an S3 event notification"
        )
        raise BadRequestError(
            'Expected a predict request ({"url": ...}, {"urls": [...]} or {"image": ...}). '
            f"Received: {kind}, which the upload function handles (the stack's "
            "UploadFunctionName output); this function stores nothing.",
            code="wrong_function",
        )


def _remaining_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else 60.0


load_at_init()
