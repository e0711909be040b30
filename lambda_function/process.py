"""The one service of this process: built once from the environment, and in Lambda during
the init phase, so that a model that cannot load fails the init rather than every request.

Both entry points use it: :mod:`lambda_function.handler` (the predict function) and
:mod:`lambda_function.uploads` (the upload function, the same image with another command).
"""

from __future__ import annotations

import functools
import logging
import os
import time

from lambda_function import observe
from lambda_function.config import TEST_ONLY_LOOPBACK, Config
from lambda_function.service import Service

RUNTIME_LEVELS = {"TRACE": "DEBUG", "FATAL": "CRITICAL"}
"""Lambda's application log levels that Python's logging names differently."""

logger = logging.getLogger("lambda_function")
_level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO").upper()
logger.setLevel(RUNTIME_LEVELS.get(_level, _level))


@functools.cache
def get_service() -> Service:
    """The one :class:`Service` of this process, from the environment (not cached on error)."""
    started = time.monotonic()
    config = Config.from_env()
    if config.allow_loopback_for_tests:
        logger.warning("%s=1: the fetcher may reach loopback. Tests only.", TEST_ONLY_LOOPBACK)
    service = Service.from_config(config)
    metadata = service.classifier.metadata
    observe.emit(
        {
            "event": "model_loaded",
            "model_loaded": metadata.version or "unknown",
            "image_size": metadata.image_size,
            "labels": len(metadata.labels),
            "threads": config.intra_op_threads,
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    return service


def load_at_init() -> None:
    """Inside Lambda (``AWS_LAMBDA_RUNTIME_API`` is set), load and warm up the model now.

    If it cannot be, the import that called this fails: Lambda then reports the init error
    (``Errors``, the INIT_REPORT), retries the init on the next request, and the log says
    why, in the ``init_failed`` line that carries the ``InitFailures`` metric."""
    if "AWS_LAMBDA_RUNTIME_API" not in os.environ:
        return
    try:
        get_service()
    except Exception as exc:
        observe.emit(observe.init_failure(exc))
        logger.exception("the model could not be loaded at cold start")
        raise
