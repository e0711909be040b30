"""What ``make run`` costs: wall time and peak memory of each step, from a cold cache.

Runs the steps ``make run`` runs (cross-validate + ship the chosen method, convert with
int8, classify the sample photos) as separate processes under ``/usr/bin/time -v``, with
an empty feature cache and fresh output folders under ``--work`` (so every base feature
is computed, as in a fresh clone), and publishes ``docs/results/make-run-DATE.md``.
The venv and the dataset are assumed in place (``make setup data``).

    DATA_DIR=... XCEPTION_WEIGHTS=... python -m bench.make_run_cost [--method today]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.results import SCRATCH, publish

SAMPLES = ("pants", "shoes", "dress", "t-shirt")
SERVED = ("serve.onnx", "model.int8.onnx", "model.onnx")


def timed(command: list[str]) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; its wall seconds and peak RSS."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"Expected {command[:4]} to succeed. Exit status: {result.returncode}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    if rss is None:
        raise SystemExit("Expected /usr/bin/time -v to report the maximum resident set size.")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(int(rss.group(1)) / 1024)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.make_run_cost", description=__doc__)
    parser.add_argument("--method", default="today", help="SHIP_METHOD (default: today)")
    parser.add_argument("--work", type=Path, default=SCRATCH / "make-run")
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    shutil.rmtree(args.work, ignore_errors=True)
    work = args.work
    python = sys.executable
    images = [str(sorted((data_dir / "test" / label).iterdir())[0]) for label in SAMPLES]
    steps = {
        "train (cv + ship)": [
            python, "-m", "training", "cv", "--methods", args.method,
            "--output-dir", str(work / "cv"), "--cache-dir", str(work / "cache"),
            "--ship", str(work / "training"),
        ],
        "convert (--int8)": [
            python, "-m", "convert", str(work / "training"),
            "-o", str(work / "model" / "model.onnx"), "--int8",
        ],
        "classify": [python, "-m", "lambda_function", *images],
    }  # fmt: skip
    figures = {}
    env_note = ""
    for name, command in steps.items():
        if name == "classify":  # the model the function would load: int8 if it passed
            served = next(p for p in SERVED if (work / "model" / p).is_file())
            os.environ["MODEL_PATH"] = str(work / "model" / served)
            env_note = f"MODEL_PATH=.../{served}"
        print(f"{name} ...", flush=True)
        figures[name] = timed(command)
        print(f"  {figures[name]}", flush=True)
    total = sum(f["wall_s"] for f in figures.values())
    peak = max(f["peak_rss_mb"] for f in figures.values())
    SCRATCH.mkdir(parents=True, exist_ok=True)
    record = {"method": args.method, "steps": figures, "wall_s": total, "peak_rss_mb": peak}
    (SCRATCH / "make_run_cost.json").write_text(json.dumps(record, indent=1))
    rows = [
        f"| {name} | {f['wall_s']:.0f} s | {f['peak_rss_mb']} MB |" for name, f in figures.items()
    ]
    table = "\n".join(
        [
            f"`make run` with SHIP_METHOD={args.method}, from an empty feature cache "
            f"(classify with {env_note}).",
            "",
            "| step | wall | peak RSS |",
            "|---|---|---|",
            *rows,
            f"| **total** | **{total:.0f} s ({total / 60:.1f} min)** | **{peak} MB** |",
        ]
    )
    print(table)
    print(f"published {publish('make-run', 'make run: wall time and peak memory', table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
