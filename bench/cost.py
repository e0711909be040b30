"""What a warm request costs and how long it takes, for each Lambda memory size.

    python -m bench.cost [--model PATH] [--photos 24] [--repeats 3]
    # -> docs/results/cost-DATE.md (committed) and artifacts/bench/cost.json

Measured here, for the served model: wall and CPU time of one 299-pixel inference with one
and with two onnxruntime threads (the session serving builds), and of decoding + preparing
real test photos. Lambda gives a function ``MemorySize / 1769`` vCPU (a CPU-time quota) and
the service runs ``ceil(vCPU)`` threads, so the expected warm latency at a size is

    prepare_cpu / min(vCPU, 1) + max(infer_wall[threads], infer_cpu[threads] / vCPU)

and its cost per million requests is the request price plus GB-seconds at the published
duration price. Fetching by URL adds network time that no memory size buys back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import RESULTS, SCRATCH, publish
from lambda_function.config import LAMBDA_MB_PER_VCPU, SERVED_MODEL
from lambda_function.model import Classifier
from lambda_function.preprocessing import prepare

MEMORY_SIZES = (1024, 1769, 2048, 3008, 3538)
PRICES = {
    # us-east-1, first tier (under 6 billion x86 / 7.5 billion arm64 GB-seconds a month),
    # from aws.amazon.com/lambda/pricing: 1 ms billing since 2020-12, arm64 since 2021-09,
    # tiers since 2022-08. Read 2026-12-01 from our notes; this machine is offline, so
    # check the live page before quoting the table to anyone.
    "x86_64": 0.0000166667,
    "arm64": 0.0000133334,
}
REQUEST_PRICE = 0.20 / 1_000_000
PRICES_AS_OF = "2026-12-01"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SERVED_MODEL)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "")))
    parser.add_argument("--photos", type=int, default=24, help="test photos per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the photos")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    args = parser.parse_args(argv)
    model = args.model
    photos = test_photos(args.data_dir, args.photos)
    measured = measure(model, photos, args.repeats)
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"path": str(model), "mb": round(model.stat().st_size / 1e6, 1)},
        "measured": measured,
        "prices": {"gb_second": PRICES, "request": REQUEST_PRICE, "as_of": PRICES_AS_OF},
        "table": table(measured),
    }
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "cost.json").write_text(json.dumps(report, indent=2) + "\n")
    out = publish("cost", "Warm latency and cost per memory size", markdown(report), args.results)
    print(out.read_text())
    return 0


def test_photos(data_dir: Path, count: int) -> list[bytes]:
    """``count`` photos of the test split, spread over its classes (sorted, reproducible)."""
    paths = sorted((data_dir / "test").glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"Expected test photos under DATA_DIR/test. Received: {data_dir}")
    step = max(1, len(paths) // count)
    return [path.read_bytes() for path in paths[::step][:count]]


def measure(model: Path, photos: list[bytes], repeats: int) -> dict[str, Any]:
    """Per-image medians in ms: preparing (one thread) and inference with 1 and 2 threads."""
    probe = Classifier.load(model, intra_op_threads=1)
    size = probe.metadata.image_size
    inputs, prepare_wall, prepare_cpu = [], [], []
    for data in photos * repeats:
        wall, cpu = time.perf_counter(), time.process_time()
        x, _ = prepare(data, size)
        prepare_wall.append(_ms(time.perf_counter() - wall))
        prepare_cpu.append(_ms(time.process_time() - cpu))
        inputs.append(x)
    result: dict[str, Any] = {
        "image_size": size,
        "samples": len(inputs),
        "prepare_wall_ms": statistics.median(prepare_wall),
        "prepare_cpu_ms": statistics.median(prepare_cpu),
    }
    for threads in (1, 2):
        classifier = Classifier.load(model, intra_op_threads=threads)
        classifier.warm_up()
        walls, cpus = [], []
        for x in inputs:
            wall, cpu = time.perf_counter(), time.process_time()
            classifier.predict(x)
            walls.append(_ms(time.perf_counter() - wall))
            cpus.append(_ms(time.process_time() - cpu))
        result[f"infer_wall_ms_{threads}"] = statistics.median(walls)
        result[f"infer_cpu_ms_{threads}"] = statistics.median(cpus)
        result[f"infer_wall_p90_ms_{threads}"] = sorted(walls)[int(0.9 * len(walls))]
    return result


def table(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Expected warm latency and cost per million requests for each memory size."""
    rows = []
    for memory in MEMORY_SIZES:
        vcpu = memory / LAMBDA_MB_PER_VCPU
        threads = max(1, math.ceil(vcpu))
        infer = max(
            measured[f"infer_wall_ms_{threads}"], measured[f"infer_cpu_ms_{threads}"] / vcpu
        )
        latency = measured["prepare_cpu_ms"] / min(vcpu, 1.0) + infer
        billed_ms = math.ceil(latency)  # Lambda bills whole milliseconds
        gb_seconds = memory / 1024 * billed_ms / 1000
        rows.append(
            {
                "memory_mb": memory,
                "vcpu": round(vcpu, 2),
                "threads": threads,
                "latency_ms": round(latency),
                "billed_ms": billed_ms,
                **{
                    f"usd_per_million_{arch}": round(1e6 * (REQUEST_PRICE + gb_seconds * price), 2)
                    for arch, price in PRICES.items()
                },
            }
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["measured"]
    lines = [
        f"Model `{report['model']['path']}` ({report['model']['mb']} MB, {m['image_size']} px), "
        f"{m['samples']} real test photos. Medians per image:",
        "",
        "| stage | wall ms | CPU ms |",
        "|---|---:|---:|",
        f"| decode + prepare | {m['prepare_wall_ms']:.1f} | {m['prepare_cpu_ms']:.1f} |",
        f"| inference, 1 thread | {m['infer_wall_ms_1']:.1f} | {m['infer_cpu_ms_1']:.1f} |",
        f"| inference, 2 threads | {m['infer_wall_ms_2']:.1f} | {m['infer_cpu_ms_2']:.1f} |",
        "",
        "Expected on Lambda (an upload; a URL adds its fetch), at "
        f"${PRICES['x86_64']:.10f}/GB-s x86_64, ${PRICES['arm64']:.10f}/GB-s arm64 and "
        f"$0.20 per million requests (us-east-1, first tier, as of {PRICES_AS_OF}):",
        "",
        "| MemorySize MB | vCPU | threads | warm latency ms | $ / 1M x86_64 | $ / 1M arm64 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["table"]:
        lines.append(
            f"| {row['memory_mb']} | {row['vcpu']} | {row['threads']} | {row['latency_ms']} "
            f"| {row['usd_per_million_x86_64']:.2f} | {row['usd_per_million_arm64']:.2f} |"
        )
    lines += [
        "",
        "arm64 rows use the x86_64 latencies (no Graviton here): only its price is known.",
        "",
    ]
    return "\n".join(lines)


def _ms(seconds: float) -> float:
    return seconds * 1000


if __name__ == "__main__":
    raise SystemExit(main())
