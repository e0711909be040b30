"""The upload function's bounds: peak memory against photos per invocation, and wall time
against a slow S3.

    python -m bench.upload_bounds [--model artifacts/model/serve.onnx] [--photos 8,32,64,128]
        [--memory-mb 1024,3008] [--before REF]
    # -> docs/results/upload-bounds-DATE.md, artifacts/bench/upload_bounds.json

**Memory.** Each case is a fresh process that loads the model as the function does
(``handler.get_service``), resets its peak-RSS counter (``/proc/self/clear_refs``), then
answers one Distributed Map batch of N dataset photos through
``uploads.lambda_handler`` with ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` set, against moto in
its own process (so moto's memory is not counted). Reported: the peak (VmHWM) above the
loaded process, the inference batches the chunking chose, and the rows written.
``--before REF`` runs the same batches with the upload code of git ``REF`` (one inference
per invocation) for comparison.

**Time.** The same function with S3 behind a loopback proxy that delays every
``GetObject`` (or never answers one), and a context that says ``--remaining-s`` are left:
the wall time of the handler, the seconds it left before the invocation's deadline, and
what it stored or handed back as transient.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bench.backfill_throughput import create_table, moto_endpoint
from bench.results import RESULTS, SCRATCH, publish

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "artifacts" / "model" / "serve.onnx"
BUCKET = "bench-upload-bounds"

CHILD = r"""
import json, sys, time
from pathlib import Path

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

from lambda_function import handler, uploads
from lambda_function.failures import TransientError

event = json.loads(sys.stdin.read())
service = handler.get_service()
batches = []
predict = service.classifier.predict
def counted(x):
    batches.append(len(x))
    return predict(x)
service.classifier.predict = counted
remaining_s = float(sys.argv[1])

class Context:
    aws_request_id = "bench"
    def get_remaining_time_in_millis(self):
        return int((deadline - time.monotonic()) * 1000)

base_kb = status_kb("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
started = time.monotonic()
deadline = started + remaining_s
error = ""
try:
    uploads.lambda_handler(event, Context())
except TransientError as exc:
    error = str(exc)[:300]
seconds = time.monotonic() - started
print(json.dumps({
    "base_mb": base_kb / 1024, "peak_mb": status_kb("VmHWM") / 1024, "seconds": seconds,
    "left_s": remaining_s - seconds, "batches": batches, "error": error,
}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upload_bounds", description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--photos", default="8,32,64,128", help="photos per invocation")
    parser.add_argument("--memory-mb", default="1024,3008", help="MemorySize values")
    parser.add_argument("--before", default="", help="git ref whose upload code to compare")
    parser.add_argument(
        "--before-photos", default="8,32", help="batch sizes to run --before's code at"
    )
    parser.add_argument("--remaining-s", type=float, default=12.0)
    parser.add_argument("--slow-photos", type=int, default=32, help="0: no slow-S3 cases")
    parser.add_argument("--name", default="upload-bounds", help="results file name")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=SCRATCH)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.photos.split(",")]
    memories = [int(m) for m in args.memory_mb.split(",")]
    photos = dataset_photos(max(max(counts), args.slow_photos))
    before = checkout(args.before, args.scratch) if args.before else None
    with moto_endpoint():
        keys = upload(photos)
        report: dict[str, Any] = {"model": str(args.model), "memory": [], "slow": []}
        for memory_mb in memories:
            for n in counts:
                figures = run_case(args, keys[:n], memory_mb, 600.0, f"m{memory_mb}-{n}")
                report["memory"].append({"code": "now", "memory_mb": memory_mb, "photos": n,
                                         **figures})  # fmt: skip
                print("memory", memory_mb, n, figures, flush=True)
                compared = [int(b) for b in args.before_photos.split(",")]
                if before is not None and memory_mb == memories[0] and n in compared:
                    figures = run_case(args, keys[:n], memory_mb, 600.0, f"b{n}", before)
                    report["memory"].append({"code": args.before, "memory_mb": memory_mb,
                                             "photos": n, **figures})  # fmt: skip
                    print("before", n, figures, flush=True)
        for name, delay in slow_cases(args.remaining_s).items() if args.slow_photos else ():
            figures = slow_case(args, keys[: args.slow_photos], delay, name)
            report["slow"].append({"case": name, **figures})
            print("slow", name, figures, flush=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    (args.scratch / f"{args.name.replace('-', '_')}.json").write_text(json.dumps(report, indent=2))
    path = publish(args.name, "Upload function: memory and time bounds",
                   markdown(report, args), args.results)  # fmt: skip
    print(f"wrote {path}")
    return 0


def dataset_photos(n: int) -> list[Path]:
    """``n`` photos of the dataset's training split (``DATA_DIR``), cycled if it has fewer."""
    root = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small")) / "train"
    found = sorted(root.glob("*/*.jpg"))
    if not found:
        raise SystemExit(f"Expected dataset photos under {root}. Received: none")
    return [found[i % len(found)] for i in range(n)]


def checkout(ref: str, scratch: Path) -> Path:
    """The repository at ``ref`` (git archive) under ``scratch``: the code to compare."""
    target = scratch / "upload_bounds" / f"code-{ref}"
    if not (target / "lambda_function").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def upload(photos: list[Path]) -> list[dict[str, Any]]:
    """Put the photos into the bench bucket; their listing items (as the ItemReader gives)."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    items = []
    for number, path in enumerate(photos):
        key = f"catalogue/{number:04d}-{path.name}"
        data = path.read_bytes()
        etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
        items.append({"Key": key, "Etag": etag, "Size": len(data), "LastModified": 1764590731})
    return items


def run_case(
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    memory_mb: int,
    remaining_s: float,
    table: str,
    code: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One invocation in a fresh process: its figures (see :data:`CHILD`)."""
    create_table(table)
    environ = {
        **os.environ,
        **(env or {}),
        "MODEL_PATH": str(args.model),
        "RESULTS_TABLE": table,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "PYTHONPATH": str(code or REPO),
    }
    event = {"BatchInput": {"bucket": BUCKET}, "Items": items}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(remaining_s)], input=json.dumps(event), env=environ,
        capture_output=True, text=True, check=True, cwd=code or REPO,
    )  # fmt: skip
    figures = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    return {**figures, "stored": count_rows(table)}


def count_rows(table: str) -> int:
    import boto3

    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table, Select="COUNT")
    return sum(page["Count"] for page in pages)


def slow_cases(remaining_s: float) -> dict[str, float | None]:
    """Per-GetObject delay of each case (``None``: one read never answers)."""
    return {
        "every GetObject 1 s": 1.0,
        "every GetObject 4 s": 4.0,
        "one GetObject never answers": None,
        f"every GetObject {remaining_s:g} s (past the deadline)": remaining_s,
    }


def slow_case(
    args: argparse.Namespace, items: list[dict[str, Any]], delay: float | None, name: str
) -> dict[str, Any]:
    """The invocation with S3 behind a proxy that holds each ``GetObject`` ``delay`` s."""
    from tests.aws_local import faulty_proxy

    release = threading.Event()
    hung = items[0]["Key"]

    def slow(path: str, headers: dict[str, str], body: bytes) -> None:
        if "/catalogue/" in path and "list-type" not in path:
            if delay is None:
                if hung in path:
                    release.wait(120)
            else:
                release.wait(delay)
        return None

    table = "slow-" + "".join(c if c.isalnum() else "-" for c in name)[:40]
    with faulty_proxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        proxy.fault = slow
        # An abandoned read's connection is closed under the proxy: expected, not worth a trace.
        proxy.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        try:
            figures = run_case(args, items, 1024, args.remaining_s, table,
                               env={"AWS_ENDPOINT_URL_S3": proxy.url})  # fmt: skip
        finally:
            release.set()
    return {"delay_s": delay, "photos": len(items), "remaining_s": args.remaining_s, **figures}


def markdown(report: dict[str, Any], args: argparse.Namespace) -> str:
    """The tables the results file carries under its header."""
    lines = [
        f"Model: `{report['model']}`. Photos: the dataset's training split (~20-100 KB JPEGs),",
        "one Distributed Map batch per invocation, S3 and DynamoDB a moto process on loopback.",
        "Peak is the process's peak resident memory (VmHWM) during the invocation above the",
        "loaded, warmed-up process (base). The CPU share of a MemorySize is *not* emulated:",
        "times are this machine's.",
        "",
        "## Peak memory against photos per invocation",
        "",
        "| code | MemorySize | photos | inference batches | base MB | peak MB | peak - base MB "
        "| headroom MB | rows | seconds |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["memory"]:
        batches, above = row["batches"], row["peak_mb"] - row["base_mb"]
        shown = f"{len(batches)} x <= {max(batches)}" if batches else "-"
        lines.append(
            f"| {row['code']} | {row['memory_mb']} | {row['photos']} | {shown} "
            f"| {row['base_mb']:.0f} | {row['peak_mb']:.0f} | {above:.0f} "
            f"| {row['memory_mb'] - row['peak_mb']:.0f} | {row['stored']} | {row['seconds']:.1f} |"
        )
    if not report["slow"]:
        return "\n".join(lines)
    lines += [
        "",
        f"## Wall time against a slow S3 (MemorySize 1024, {args.remaining_s:g} s left, "
        "DEADLINE_RESERVE 3 s)",
        "",
        "Rows: rows stored; a transient error means the invocation raised after storing them,",
        "so the event is retried (and the stored rows skipped on the retry).",
        "",
        "| case | photos | wall s | s left at return | rows | transient error |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in report["slow"]:
        error = row["error"].split(". First:")[0] if row["error"] else ""
        lines.append(
            f"| {row['case']} | {row['photos']} | {row['seconds']:.2f} | {row['left_s']:.2f} "
            f"| {row['stored']} | {error} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
