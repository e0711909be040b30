"""Classify local files or URLs with the handler itself, no AWS needed, printing its JSON.

Each file becomes a direct invocation ``{"image": "<base64>"}`` and each URL
``{"url": ...}``, answered by :func:`lambda_function.handler.lambda_handler`, so this
is the code path the deployed function takes, fetcher included.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_function.config import Config
from lambda_function.model import MISSING_MODEL_HINT

URL_SCHEMES = ("http://", "https://", "s3://")


@dataclass
class LocalContext:
    """The parts of a Lambda context the handler reads."""

    timeout_s: float = 60.0
    aws_request_id: str = field(default_factory=lambda: f"local-{uuid.uuid4()}")
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.started + self.timeout_s - time.monotonic()) * 1000)


def main(argv: list[str] | None = None) -> int:
    """Print the answer for each input; exit 1 if any input failed, 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="python -m lambda_function",
        description="Classify clothing photos (files, http(s):// or s3:// URLs) with the "
        "Lambda handler and print its JSON answer.",
    )
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_URL")
    parser.add_argument(
        "--model",
        type=Path,
        help="the ONNX model (default: MODEL_PATH, else the baked-in or "
        "served model artifacts/model/serve.onnx)",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="also print the function's log lines (one JSON line per request) to stderr",
    )
    args = parser.parse_args(argv)
    if args.model is not None:
        os.environ["MODEL_PATH"] = str(args.model)
    config = Config.from_env()
    if not config.model_s3_uri and not config.model_path.is_file():
        print(f"error: no model at {config.model_path}. {MISSING_MODEL_HINT}", file=sys.stderr)
        return 2
    try:
        requests = [_event(item) for item in args.inputs]
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from lambda_function.handler import lambda_handler

    # The handler prints its log lines to stdout (as Lambda wants); here stdout is the answer.
    with contextlib.redirect_stdout(sys.stderr if args.log else io.StringIO()):
        answers = [
            {"input": item, **lambda_handler(event, LocalContext())}
            for item, event in zip(args.inputs, requests, strict=True)
        ]
    output: Any = answers[0] if len(answers) == 1 else {"results": answers}
    print(json.dumps(output, indent=2))
    return 1 if any("error" in answer for answer in answers) else 0


def _event(item: str) -> dict[str, str]:
    if item.startswith(URL_SCHEMES):
        return {"url": item}
    return {"image": base64.b64encode(Path(item).read_bytes()).decode("ascii")}
