"""Where `make run`'s feature extraction spends its time: decoding, or the base itself?

Decodes 96 training photos as training does, then runs the ImageNet base on them under
Keras (``predict_on_batch``, what training uses) and under onnxruntime fp32 (the
converted model: the same base plus a 10-way head), at batch 8 and 32, 2 threads.

    python -m bench.feature_speed [--onnx artifacts/model/model.onnx]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.results import publish

PHOTOS = 96


def throughput(run: Callable[[np.ndarray], object], x: np.ndarray, batch: int) -> float:
    """Photos per second over ``x`` in batches of ``batch`` (after one warm-up batch)."""
    run(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        run(x[i : i + batch])
    return len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feature_speed", description=__doc__)
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/model/model.onnx"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "")))
    parser.add_argument("--weights", default=os.environ.get("XCEPTION_WEIGHTS", "imagenet"))
    parser.add_argument("--image-size", type=int, default=299)
    args = parser.parse_args(argv)
    from lambda_function.model import open_session
    from lambda_function.preprocessing import scale
    from training import data
    from training.model import make_base

    dataset = data.scan(args.data_dir, splits=("train",))
    files = dataset["train"].files[:: max(1, len(dataset["train"].files) // PHOTOS)][:PHOTOS]
    start = time.perf_counter()
    size, weights = args.image_size, None if args.weights == "none" else args.weights
    x = scale(np.stack([data.decode_file(path, size) for path in files]))
    decode_ms = (time.perf_counter() - start) / len(files) * 1000
    keras = make_base(size, weights).predict_on_batch
    session = open_session(args.onnx, intra_op_threads=2, quiet=True)
    name = session.get_inputs()[0].name
    rows = [f"| decode + resize (training's `decode_file`) | {decode_ms:.1f} ms/photo |"]
    for label, run in (
        ("Keras `predict_on_batch`", keras),
        ("onnxruntime fp32", lambda batch: session.run(None, {name: batch})),
    ):
        for batch in (8, 32):
            rows.append(f"| {label}, batch {batch} | {throughput(run, x, batch):.1f} photos/s |")
    table = (
        f"{len(files)} training photos, the Xception base at {size} px, 2 threads.\n\n"
        "| step | speed |\n|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(table)
    print(f"published {publish('feature-speed', 'Feature extraction speed', table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
