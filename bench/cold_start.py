"""Cold start of the handler: this code, an earlier checkout, and this code with Powertools.

    python -m bench.cold_start --baseline ../main --powertools-site /tmp/powertools \
        --model artifacts/model/serve.onnx --photo PHOTO [--runs 12]
    # -> docs/results/cold-start-DATE.md (committed) and artifacts/bench/cold_start.json

Each run is a fresh interpreter that does what a Lambda init and first request do: import
the handler, load and warm up the model (``get_service``), answer one real test photo. The
parent records the child's wall time and CPU time (user + system, every thread); variants
take turns, so the machine's load falls on each alike. ``--powertools-site`` is a folder
where ``pip install --target DIR aws-lambda-powertools==3.37.0`` put the library: that
variant imports it and builds its ``Logger`` and ``Metrics`` first, which is the cost of
adopting it; the metrics themselves are written by this code in every variant.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import RESULTS, SCRATCH, publish

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
started = time.perf_counter()
if {powertools!r}:
    from aws_lambda_powertools import Logger, Metrics
    Logger(service="fashion-classifier")
    Metrics(namespace="FashionClassifier", service="fashion-classifier")
from lambda_function import handler
imported = time.perf_counter()
handler.get_service()
loaded = time.perf_counter()
answer = handler.lambda_handler({{"image": {image!r}}}, None)
done = time.perf_counter()
assert "category" in answer, answer
ms = lambda a, b: round((b - a) * 1000, 1)
print("RESULT " + json.dumps({{"import_ms": ms(started, imported),
    "load_ms": ms(imported, loaded), "first_ms": ms(loaded, done)}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier checkout")
    parser.add_argument("--powertools-site", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="the served model")
    parser.add_argument("--photo", type=Path, required=True, help="a test photo")
    parser.add_argument("--threads", default="2", help="ORT_INTRA_OP_THREADS (3008 MB: 2)")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    args = parser.parse_args(argv)
    image = base64.b64encode(args.photo.read_bytes()).decode()
    variants = {
        "baseline": (args.baseline.resolve(), None),
        "this code": (REPO, None),
        "this code + Powertools": (REPO, args.powertools_site.resolve()),
    }
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, (code, site) in variants.items():
            samples[name].append(run(code, site, args.model.resolve(), image, args.threads))
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"path": str(args.model), "mb": round(args.model.stat().st_size / 1e6, 1)},
        "medians": {name: summary(runs) for name, runs in samples.items()},
        "samples": samples,
    }
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    title = "Cold start: import, model load, first answer"
    out = publish("cold-start", title, markdown(report), args.results)
    print(out.read_text())
    return 0


def run(code: Path, site: Path | None, model: Path, image: str, threads: str) -> dict[str, float]:
    """One fresh interpreter: its phases, wall time and CPU time in ms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    paths = [str(site)] if site else []
    env |= {
        "PYTHONPATH": os.pathsep.join([*paths, str(code)]),
        "MODEL_PATH": str(model),
        "ORT_INTRA_OP_THREADS": threads,
    }
    script = CHILD.format(powertools=site is not None, image=image)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=code, env=env, capture_output=True, text=True
    )
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{code}: the child failed:\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return {**json.loads(line.removeprefix("RESULT ")), "wall_ms": wall, "cpu_ms": cpu}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}


def markdown(report: dict[str, Any]) -> str:
    medians = report["medians"]
    base = medians["baseline"]
    lines = [
        f"Model `{report['model']['path']}` ({report['model']['mb']} MB). Medians of "
        f"{len(report['samples']['baseline'])} fresh interpreters per variant, taken in turns "
        "on shared cores:",
        "",
        "| variant | import ms | load + warm-up ms | first answer ms | wall ms | CPU ms "
        "| CPU vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        change = 100 * (m["cpu_ms"] / base["cpu_ms"] - 1)
        lines.append(
            f"| {name} | {m['import_ms']} | {m['load_ms']} | {m['first_ms']} | {m['wall_ms']} "
            f"| {m['cpu_ms']} | {change:+.1f}% |"
        )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    raise SystemExit(main())
