"""The one line per request: what came in, where the time went, the outcome, and its metrics.

Each line is one JSON object printed to stdout. Lambda sends stdout to CloudWatch Logs as it
is, in its text and its JSON log format alike, so the line stays an object (never a string
inside another ``message``), and CloudWatch turns the values it declares under ``_aws`` into
metrics (Embedded Metric Format): no API call, no library, no extra cold-start cost.

Only hosts are logged, never paths or query strings (a presigned URL's signature lives
there), and never error messages (they may quote the URL).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lambda_function.events import Request
    from lambda_function.service import Answer

MAX_HOST_CHARS = 255
DEFAULT_NAMESPACE = "FashionClassifier"
"""CloudWatch namespace of the metrics unless ``METRICS_NAMESPACE`` names another."""

MS, BYTES, COUNT = "Milliseconds", "Bytes", "Count"


def request_line(
    *,
    request_id: str,
    source: str,
    request: Request | None,
    answer: Answer | None,
    status: int,
    code: str,
    cold_start: bool,
    total_ms: float,
) -> dict[str, Any]:
    """The log record of one request, from the request and the service's per-item results."""
    urls = [item.url for item in request.items if item.url] if request else []
    items = answer.items if answer else ()
    return {
        "request_id": request_id,
        "source": source,
        "input": _kind(request, urls),
        "hosts": [host_of(url) for url in urls],
        "items": len(request.items) if request else 0,
        "bytes": sum(item.bytes for item in items),
        "image_sizes": [f"{item.width}x{item.height}" for item in items if item.width],
        "item_errors": [item.error.code for item in items if item.error is not None],
        "fetch_ms": _ms(max((item.fetch_ms for item in items), default=0.0)),
        "decode_ms": _ms(sum(item.decode_ms for item in items)),
        "inference_ms": _ms(answer.inference_ms if answer else 0.0),
        "total_ms": _ms(total_ms),
        "status": status,
        "code": code,
        "cold_start": cold_start,
    }


def with_metrics(line: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``line`` as an EMF document: requests by source and status class, errors by code,
    latencies, image bytes and cold starts, under the function's name."""
    status = int(line["status"])
    values: dict[str, float] = {"Latency": line["total_ms"], "ColdStart": int(line["cold_start"])}
    definitions = [_metric("Latency", MS), _metric("ColdStart", COUNT)]
    for name, field, unit in (
        ("FetchLatency", "fetch_ms", MS),
        ("DecodeLatency", "decode_ms", MS),
        ("InferenceLatency", "inference_ms", MS),
        ("ImageBytes", "bytes", BYTES),
    ):
        if line[field]:  # a stage that did not run is no sample of its latency
            values[name] = line[field]
            definitions.append(_metric(name, unit))
    directives = [
        {"Dimensions": [["Function"]], "Metrics": definitions},
        {
            "Dimensions": [["Function"], ["Function", "Source"], ["Function", "StatusClass"]],
            "Metrics": [_metric("Requests", COUNT)],
        },
    ]
    dimensions = {"Source": line["source"], "StatusClass": f"{status // 100}xx"}
    if status >= 400:
        errors = [_metric("Errors", COUNT)]
        directives.append({"Dimensions": [["Function", "ErrorCode"]], "Metrics": errors})
        dimensions["ErrorCode"] = line["code"]
        values["Errors"] = 1
    return _document(line, directives, {**dimensions, **values, "Requests": 1}, environ)


def init_failure(exc: BaseException, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The line (and the ``InitFailures`` metric) for a model or setting that cannot load."""
    line = {"event": "init_failed", "error": type(exc).__name__, "reason": str(exc)}
    directives = [{"Dimensions": [["Function"]], "Metrics": [_metric("InitFailures", COUNT)]}]
    return _document(line, directives, {"InitFailures": 1}, environ)


UPLOAD_COUNTS = (
    ("PhotosClassified", "classified"),
    ("PhotosFailed", "failed"),
    ("PhotosUnchanged", "unchanged"),
    ("PhotosSkipped", "skipped"),
    ("PhotosTransient", "transient"),
)


def upload_metrics(line: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The upload function's line as an EMF document: its photos by outcome and its duration,
    by function and by event kind (``s3``, ``backfill``); an invocation that raised counts
    under ``UploadErrors`` by error type."""
    values: dict[str, float] = {name: line[field] for name, field in UPLOAD_COUNTS}
    values |= {"UploadDuration": line["total_ms"], "Invocations": 1}
    metrics = [_metric(name, COUNT) for name, _ in UPLOAD_COUNTS]
    metrics += [_metric("UploadDuration", MS), _metric("Invocations", COUNT)]
    directives = [{"Dimensions": [["Function"], ["Function", "EventKind"]], "Metrics": metrics}]
    dimensions = {"EventKind": line["event"]}
    if line.get("error"):
        directives.append(
            {"Dimensions": [["Function", "ErrorType"]], "Metrics": [_metric("UploadErrors", COUNT)]}
        )
        dimensions["ErrorType"] = line["error"]
        values["UploadErrors"] = 1
    return _document({"event": "upload_metrics"}, directives, {**dimensions, **values}, environ)


def emit(line: dict[str, Any]) -> None:
    """Print ``line`` as one JSON object (Lambda ships stdout to CloudWatch as it is)."""
    sys.stdout.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def host_of(url: str) -> str:
    """The host (or S3 bucket) of ``url``, lower-case and bounded; "" when there is none."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return host[:MAX_HOST_CHARS]


def document(
    line: dict[str, Any],
    directives: list[dict[str, Any]],
    members: dict[str, Any],
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``line`` as an EMF document of ``directives`` with ``members`` (dimensions and values),
    under the namespace and the function's name; for the modules that add their own metrics."""
    return _document(line, directives, members, environ)


def _document(
    line: dict[str, Any],
    directives: list[dict[str, Any]],
    members: dict[str, Any],
    environ: dict[str, str] | None,
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    namespace = env.get("METRICS_NAMESPACE") or DEFAULT_NAMESPACE
    metadata = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": [{"Namespace": namespace, **d} for d in directives],
    }
    function = env.get("AWS_LAMBDA_FUNCTION_NAME") or "local"
    return {"_aws": metadata, **line, "Function": function, **members}


def _metric(name: str, unit: str) -> dict[str, str]:
    return {"Name": name, "Unit": unit}


def _kind(request: Request | None, urls: list[str]) -> str:
    if request is None:
        return "unparsed"
    if request.batch:
        return "batch"
    if urls:
        return "s3" if urls[0].lower().startswith("s3:") else "url"
    return "image"


def _ms(value: float) -> float:
    return round(value, 1)
