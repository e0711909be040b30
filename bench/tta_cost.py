"""Is test-time flip averaging affordable? int8 on photo + mirror vs ORT fp32 on the photo.

The gate (issue 13): serving with the flip must stay >= 2x faster than onnxruntime fp32
without it. Both run interleaved on the same real test photos (batch 1 for fp32; the
photo and its mirror image as one batch of 2 for int8), 2 threads each, medians compared.

    python -m bench.tta_cost [--model artifacts/model/model.onnx] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.results import publish


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(run, inputs: list[np.ndarray]) -> float:
    times = []
    for x in inputs:
        started = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tta_cost", description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model/model.onnx"))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    from lambda_function.preprocessing import load_pixels, scale

    data_dir = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    photos = sorted((data_dir / "test").glob("*/*.jpg"))[:: 372 // args.runs][: args.runs]
    pixels = [scale(load_pixels(p.read_bytes(), 299)[None]) for p in photos]
    pairs = [np.concatenate([x, x[:, :, ::-1]]) for x in pixels]
    fp32, int8 = session(args.model), session(args.model.with_name(f"{args.model.stem}.int8.onnx"))
    for s, x in ((fp32, pixels[0]), (int8, pairs[0])):  # warm-up
        s.run(None, {"input": x})
    rounds: dict[str, list[float]] = {"fp32 x1": [], "int8 x1": [], "int8 flip pair": []}
    for _ in range(3):  # interleaved, so a busy moment hits every variant alike
        rounds["fp32 x1"].append(median_ms(lambda x: fp32.run(None, {"input": x}), pixels))
        rounds["int8 x1"].append(median_ms(lambda x: int8.run(None, {"input": x}), pixels))
        rounds["int8 flip pair"].append(median_ms(lambda x: int8.run(None, {"input": x}), pairs))
    ms = {name: min(values) for name, values in rounds.items()}
    lines = ["| serving | batch-1 median | speed-up vs ORT fp32 |", "|---|---|---|"]
    lines += [f"| {name} | {v:.1f} ms | {ms['fp32 x1'] / v:.2f}x |" for name, v in ms.items()]
    verdict = ms["fp32 x1"] / ms["int8 flip pair"] >= 2
    lines += ["", f"Flip averaging passes the >= 2x gate: **{'yes' if verdict else 'no'}**."]
    table = "\n".join(lines)
    print(table)
    print(f"published {publish('tta-cost', 'Test-time flip averaging: serving cost', table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
