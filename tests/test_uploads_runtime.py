"""The upload function's container command through the real runtime client.

``python -m awslambdaric lambda_function.uploads.lambda_handler`` is what the image runs
for the upload function's ``ImageConfig.Command``: the model loads at init, an S3 event
is answered, and a transient failure is reported to Lambda as an error whose
``errorType`` is the one the backfill's ``Retry`` names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests import aws_local
from tests.lambda_testing import RED, image_bytes
from tests.test_lambda_runtime import RuntimeApi

REPO = Path(__file__).resolve().parent.parent
BUCKET, TABLE = "runtime-uploads", "runtime-results"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with aws_local.moto_endpoint() as url:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        aws_local.create_results_table(TABLE)
        yield url


def test_the_upload_command_stores_rows_and_reports_transient_errors(
    endpoint: str, tiny_model: Path
) -> None:
    data = image_bytes(RED)
    etag = boto3.client("s3").put_object(Bucket=BUCKET, Key="uploads/red.jpg", Body=data)["ETag"]
    events = [
        aws_local.s3_put_event(BUCKET, "uploads/red.jpg", etag.strip('"'), len(data)),
        {"BatchInput": {"bucket": "no-such-bucket"}, "Items": [{"Key": "a.jpg", "Size": 9}]},
    ]
    api = RuntimeApi([])
    threading.Thread(target=api.serve_forever, args=(0.05,), daemon=True).start()
    env = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "MODEL_PATH": str(tiny_model),
        "RESULTS_TABLE": TABLE,
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "lambda_function.uploads.lambda_handler"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    loaded = threading.Event()

    def read_output() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if '"model_loaded"' in line:
                loaded.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        assert loaded.wait(60), "".join(lines)  # at init, before any event
        for number, event in enumerate(events):
            api.pending.put((f"request-{number}", event))
        answers = [api.posted.get(timeout=60) for _ in events]
    finally:
        process.kill()
        process.wait()
        api.shutdown()
        api.server_close()
    output = "".join(lines)
    (kind_ok, stored), (kind_error, error) = answers
    assert kind_ok == "invocation/request-0/response", output
    assert stored["photos"][0]["category"] == "dress"
    assert kind_error == "invocation/request-1/error", output
    assert error["errorType"] == "TransientError"
    assert [row["category"] for row in aws_local.rows(TABLE)] == ["dress"]
