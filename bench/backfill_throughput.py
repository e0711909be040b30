"""Photos per second per vCPU on the backfill path: one photo per invoke vs batches.

    python -m bench.backfill_throughput [--model PATH] [--photos 256] [--batch-sizes 8,16,32]
    # or: make bench-backfill  -> docs/results/backfill-throughput-DATE.md,
    #                             artifacts/bench/backfill_throughput.json

Everything the deployed function does per invocation runs here, end to end, through
``lambda_function.uploads.lambda_handler`` with Distributed Map batch events: the check
for existing rows (``BatchGetItem``), parallel ``GetObject`` of every photo, decoding and
resizing, one batched inference, and one conditional ``PutItem`` per photo. S3 and
DynamoDB are a moto server on loopback, so network latency is not in the figures (in AWS
it overlaps with decoding across the parallel reads). Batch size 1 is the
one-photo-per-invoke rate: the upload trigger's, and what S3 Batch Operations would get.
Every mode gets a fresh table (nothing is skipped as already done); modes alternate over
``--rounds`` and the median is kept. The cost table turns the rate into dollars per
million photos at Lambda's published prices for ``template.yaml``'s MemorySize.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import RESULTS, SCRATCH, publish
from lambda_function.config import SERVED_MODEL

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / SERVED_MODEL
BUCKET = "bench-catalogue"
LAMBDA_MB_PER_VCPU = 1769

# Published prices, us-east-1, checked 2026-12 (aws.amazon.com/lambda/pricing, /step-functions
# /pricing, /s3/pricing, /dynamodb/pricing): first pricing tier of each.
LAMBDA_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICES = {
    "lambda_request": 0.20 / 1e6,
    "s3_get": 0.0004 / 1000,
    "s3_list": 0.005 / 1000,
    "dynamodb_write": 0.625 / 1e6,
    "dynamodb_read": 0.125 / 1e6,
    "express_request": 1.00 / 1e6,
    "express_gb_s": 0.00001667,
    "s3_batch_job": 0.25,
    "s3_batch_object": 1.00 / 1e6,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--photos", type=int, default=256, help="dataset photos per mode")
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the markdown goes")
    parser.add_argument("--scratch", type=Path, default=SCRATCH, help="where the JSON goes")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"Expected the int8 model at {args.model} (make run). Received: no file.")
        return 2
    data_dir = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    photos = sorted((data_dir / "test").glob("*/*.jpg"))[: args.photos]
    if len(photos) < args.photos:
        print(f"Expected {args.photos} photos under {data_dir}/test. Received: {len(photos)}.")
        return 2
    sizes = [1, *(int(n) for n in args.batch_sizes.split(","))]
    load_before = os.getloadavg()[0]
    report = measure(args.model, photos, sizes, args.rounds)
    report["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    report["cost"] = cost_table(report)
    args.scratch.mkdir(parents=True, exist_ok=True)
    (args.scratch / "backfill_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    written = publish("backfill-throughput", "Backfill throughput", markdown(report), args.results)
    print(written.read_text())
    return 0


def measure(model: Path, photos: list[Path], sizes: list[int], rounds: int) -> dict[str, Any]:
    os.environ["MODEL_PATH"] = str(model)
    with moto_endpoint():
        import boto3

        from lambda_function import handler, uploads

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        items = []
        for number, path in enumerate(photos):
            key = f"catalogue/{path.parent.name}/{path.name}"
            answer = s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            items.append(
                {
                    "Key": key,
                    "Etag": answer["ETag"],
                    "Size": path.stat().st_size,
                    "LastModified": 1764590731 + number,
                    "StorageClass": "STANDARD",
                }
            )
        service = handler.get_service()
        runs: dict[int, list[float]] = {size: [] for size in sizes}
        cpu: dict[int, list[float]] = {size: [] for size in sizes}
        for round_number in range(rounds):
            for size in sizes:
                table = f"bench-{round_number}-{size}"
                create_table(table)
                os.environ["RESULTS_TABLE"] = table
                started, cpu_started = time.perf_counter(), time.process_time()
                for start in range(0, len(items), size):
                    event = {"BatchInput": {"bucket": BUCKET}, "Items": items[start : start + size]}
                    uploads.lambda_handler(event, None)
                runs[size].append(len(items) / (time.perf_counter() - started))
                cpu[size].append(len(items) / (time.process_time() - cpu_started))
        inference = inference_only(service, photos[:64], max(sizes))
    vcpus = len(os.sched_getaffinity(0))
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        "model_version": service.classifier.metadata.version,
        "image_size": service.classifier.metadata.image_size,
        "photos": len(items),
        "rounds": rounds,
        "vcpus": vcpus,
        "ort_threads": service.config.intra_op_threads,
        "cpu": platform.processor() or platform.machine(),
        "memory_size_mb": template_memory_size(),
        "photos_per_s": {str(size): round(statistics.median(r), 2) for size, r in runs.items()},
        "photos_per_s_per_vcpu": {
            str(size): round(statistics.median(r) / vcpus, 2) for size, r in runs.items()
        },
        "all_runs": {str(size): [round(x, 2) for x in r] for size, r in runs.items()},
        "photos_per_cpu_s": {str(size): round(statistics.median(r), 2) for size, r in cpu.items()},
        "inference_only_per_s": inference,
    }


def inference_only(service: Any, photos: list[Path], batch: int) -> dict[str, float]:
    """The model alone on preprocessed photos, batch 1 vs ``batch``: the floor of the path."""
    import numpy as np

    from lambda_function.preprocessing import preprocess

    size = service.classifier.metadata.image_size
    x = np.concatenate([preprocess(p.read_bytes(), size) for p in photos[:batch]])
    rates = {}
    for n in (1, batch):
        started = time.perf_counter()
        for start in range(0, len(x), n):
            service.classifier.predict(x[start : start + n])
        rates[str(n)] = round(len(x) / (time.perf_counter() - started), 2)
    return rates


def cost_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Dollars per million photos for each engine, architecture and batch size measured.

    Lambda bills GB-seconds: a function of M MB gets M/1769 vCPUs, so one photo costs
    (M/1024) GB x 1/(rate per vCPU x M/1769) s, whatever M is, as long as the rate per vCPU
    holds. arm64 is priced at the same measured rate (not measured here)."""
    memory = report["memory_size_mb"]
    vcpus = memory / LAMBDA_MB_PER_VCPU
    rows = []
    for size, per_vcpu in report["photos_per_s_per_vcpu"].items():
        batch = int(size)
        seconds = 1e6 / (per_vcpu * vcpus)
        storage = 1e6 * (PRICES["s3_get"] + PRICES["dynamodb_write"] + PRICES["dynamodb_read"])
        if batch == 1:  # S3 Batch Operations: one task (and invoke) per photo
            engine = "S3 Batch Operations (1 photo/invoke)"
            orchestration = PRICES["s3_batch_job"] + 1e6 * PRICES["s3_batch_object"]
        else:  # Distributed Map: one Express child per batch (~2 s x 64 MB) + the listing
            engine = f"Step Functions Distributed Map (batches of {batch})"
            children = 1e6 / batch
            orchestration = (
                children * (PRICES["express_request"] + PRICES["express_gb_s"] * 0.0625 * 2)
                + (1e6 / 1000) * PRICES["s3_list"]
            )
        requests = 1e6 / batch * PRICES["lambda_request"]
        for arch, price in LAMBDA_GB_S.items():
            compute = seconds * memory / 1024 * price
            rows.append(
                {
                    "engine": engine,
                    "architecture": arch,
                    "batch": batch,
                    "lambda_compute": round(compute, 2),
                    "lambda_requests": round(requests, 2),
                    "orchestration": round(orchestration, 2),
                    "s3_and_dynamodb": round(storage, 2),
                    "total": round(compute + requests + orchestration + storage, 2),
                    "lambda_hours": round(seconds / 3600, 1),
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    single = report["photos_per_s"]["1"]
    lines = [
        f"Model: `{report['model']}` (version {report['model_version']}, "
        f"{report['image_size']} px); {report['photos']} test-split photos per mode, "
        f"median of {report['rounds']} rounds; {report['vcpus']} vCPUs "
        f"({report['cpu']}), onnxruntime with {report['ort_threads']} threads. S3 and DynamoDB: "
        "moto on loopback. The machine is shared with other jobs (1-minute load average "
        f"{report['load_average'][0]} before, {report['load_average'][1]} after); "
        "figures are lower bounds.",
        "",
        "| photos per invoke | photos/s | photos/s per vCPU | vs 1 per invoke | all rounds "
        "| photos per CPU-second of the function |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for size, rate in report["photos_per_s"].items():
        per_vcpu = report["photos_per_s_per_vcpu"][size]
        runs = ", ".join(str(x) for x in report["all_runs"][size])
        cpu = report["photos_per_cpu_s"][size]
        lines.append(f"| {size} | {rate} | {per_vcpu} | {rate / single:.2f}x | {runs} | {cpu} |")
    floor = report["inference_only_per_s"]
    lines += [
        "",
        "photos/s is wall-clock time on the machine's vCPUs, which also run moto (a pessimistic "
        "bound, and what the cost table uses); the last column counts only this process's CPU "
        "time (the function's own work: boto3, decoding, inference).",
        "",
        f"The model alone on preprocessed photos: {floor} photos/s by batch size "
        "(the ceiling of the path).",
        "",
        f"## Cost per million photos (MemorySize {report['memory_size_mb']} MB)",
        "",
        "| engine | arch | Lambda compute | Lambda requests | orchestration | S3 GET + DynamoDB "
        "| total | Lambda hours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["cost"]:
        lines.append(
            f"| {row['engine']} | {row['architecture']} | ${row['lambda_compute']} | "
            f"${row['lambda_requests']} | ${row['orchestration']} | ${row['s3_and_dynamodb']} | "
            f"**${row['total']}** | {row['lambda_hours']} |"
        )
    lines += [
        "",
        "arm64 rows assume the x86 rate measured here (not measured: no Graviton machine).",
        "",
    ]
    return "\n".join(lines)


def template_memory_size() -> int:
    """The ``MemorySize`` parameter's default in ``template.yaml``: what both functions get."""
    text = (REPO / "template.yaml").read_text()
    found = re.search(r"^  MemorySize:\n    Type: Number\n    Default: (\d+)$", text, re.M)
    if found is None:
        raise ValueError("Expected a MemorySize parameter with a Default in template.yaml.")
    return int(found.group(1))


def create_table(name: str) -> None:
    import boto3

    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "photo", "AttributeType": "S"},
            {"AttributeName": "etag", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "photo", "KeyType": "HASH"},
            {"AttributeName": "etag", "KeyType": "RANGE"},
        ],
    )


@contextmanager
def moto_endpoint() -> Iterator[None]:
    """moto in its own process on loopback (so its CPU is not the function's), with every
    boto3 client of this process pointed at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"moto did not start on {url} within 30 s")
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
