"""The Lambda entry point: adapt the event, call the service, map any error once.

Inside Lambda (``AWS_LAMBDA_RUNTIME_API`` is set) the model is loaded and warmed up at
import, during the init phase. Elsewhere (tests, the CLI) importing this module is
cheap and the model loads on first use. Every request logs one JSON line
(:mod:`lambda_function.observe`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from typing import Any

from lambda_function import events, uploads
from lambda_function.config import TEST_ONLY_LOOPBACK, Config
from lambda_function.errors import to_service_error
from lambda_function.observe import RequestTrace
from lambda_function.service import Service

logger = logging.getLogger("lambda_function")
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


@functools.cache
def get_service() -> Service:
    """The one :class:`Service` of this process, from the environment (not cached on error)."""
    started = time.monotonic()
    config = Config.from_env()
    if config.allow_loopback_for_tests:
        logger.warning("%s=1: the fetcher may reach loopback. Tests only.", TEST_ONLY_LOOPBACK)
    service = Service.from_config(config)
    metadata = service.classifier.metadata
    logger.info(
        json.dumps(
            {
                "model_loaded": metadata.version or "unknown",
                "image_size": metadata.image_size,
                "labels": len(metadata.labels),
                "threads": config.intra_op_threads,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    )
    return service


_process = {"cold": True}
"""Whether this process has answered a request yet (the log's ``cold_start``)."""


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Classify the image(s) ``event`` names; see the README's API contract."""
    if uploads.is_s3_notification(event):  # an upload: its answer goes to the results table
        return uploads.lambda_handler(event, context)
    trace = RequestTrace()
    request_id = getattr(context, "aws_request_id", "") or str(uuid.uuid4())
    source = events.source_of(event)
    cold_start, _process["cold"] = _process["cold"], False
    try:
        service = get_service()
        config = service.config
        request = events.parse(
            event, source, max_bytes=config.upload_cap, max_batch=config.max_batch
        )
        trace.describe(request)
        payload = service.answer(request, service.deadline(_remaining_s(context)), trace)
        status, code = 200, ""
    except Exception as exc:  # noqa: BLE001 - the one place where failures become answers
        error = to_service_error(exc)
        payload, status, code = error.to_payload(request_id), error.status, error.code
    line = trace.log_line(
        request_id=request_id, source=source, status=status, code=code, cold_start=cold_start
    )
    logger.info(json.dumps(line))
    return events.respond(source, status, payload)


def _remaining_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else 60.0


if "AWS_LAMBDA_RUNTIME_API" in os.environ:
    try:
        get_service()
    except Exception:
        logger.exception("the model could not be loaded at cold start")
