"""Convert the real model and measure what conversion costs and keeps.

    python -m bench.convert_real [TRAINING_DIR] [--out artifacts/bench] [--results docs/results]

Runs `python -m convert` (every validation photo; the optimised and the int8 variants)
on the best run of the training folder (default ``artifacts/training``, the 299 model),
then measures what the report does not: int8 with per-tensor weights, dynamic
quantisation (measured, never shipped), and batch-1 latency of each variant with
onnxruntime on this CPU. Writes ``convert.json`` and ``convert.md`` under ``--out``
(the models go to ``--out``/convert/) and ``convert-DATE.md`` under ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import RESULTS, SCRATCH, publish
from convert.errors import ConvertError, VerificationError
from convert.evaluate import compare_to, load_eval_sets, score
from convert.images import labelled_split, spread_sample
from convert.pipeline import Options, run
from convert.quantize import quantize_int8
from convert.runtime import open_session
from lambda_function import preprocessing

LATENCY_PHOTOS = 20  # distinct test photos, each run LATENCY_REPEATS times
LATENCY_REPEATS = 3
DYNAMIC_PHOTOS = 5  # dynamic int8 is slow: a few photos are enough to measure it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=Path("artifacts/training"))
    parser.add_argument("--out", type=Path, default=SCRATCH)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small")),
    )
    parser.add_argument(
        "--markdown-only", action="store_true", help="re-render convert.md from convert.json"
    )
    args = parser.parse_args(argv)
    if args.markdown_only:
        figures = json.loads((args.out / "convert.json").read_text())
        (args.out / "convert.md").write_text(markdown(figures))
        print(markdown(figures))
        return 0
    options = Options(
        source=args.source,
        output=args.out / "convert" / "model.onnx",
        data_dir=args.data_dir,
        optimize=True,
        int8=True,
    )
    started = time.perf_counter()
    try:
        report = run(options).to_dict()
    except VerificationError as exc:  # a rejected variant still leaves a full report
        print(f"bench: {exc}", file=sys.stderr)
        report = json.loads(options.report_path.read_text())
        if not report.get("verification", {}).get("passed"):
            return 1
    except ConvertError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    figures = measure_more(options, report)
    figures["bench_wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convert.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "convert.md").write_text(markdown(figures))
    publish("convert", "Conversion", markdown(figures), args.results)
    print(markdown(figures))
    return 0


def measure_more(options: Options, report: dict[str, Any]) -> dict[str, Any]:
    """Per-tensor int8, dynamic int8 and batch-1 latency, added to the report."""
    size, labels = report["image_size"], report["labels"]
    splits = {s: labelled_split(options.data_dir, s, labels) for s in ("validation", "test")}
    eval_sets = load_eval_sets(splits, size)
    baseline = score(options.output, eval_sets)
    photos = spread_sample(splits["test"], LATENCY_PHOTOS, seed=1)
    inputs = [preprocessing.preprocess(p.path.read_bytes(), size) for p in photos]
    variants = report["variants"]
    models = {name: Path(v["path"]) for name, v in variants.items() if v.get("path")}
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as scratch:
        per_tensor = Path(scratch) / "int8-per-tensor.onnx"
        calibration = spread_sample(
            labelled_split(options.data_dir, "train", labels), options.calibration_images
        )
        print("bench: int8 with per-tensor weights, for comparison", file=sys.stderr)
        quantize_int8(options.output, per_tensor, calibration, size, per_channel=False)
        variants["int8_per_tensor"] = {
            "size_bytes": per_tensor.stat().st_size,
            **compare_to(baseline, score(per_tensor, eval_sets)),
            "shipped": False,
        }
        plain = Path(scratch) / "int8-plain-minmax.onnx"
        print("bench: int8 with plain MinMax ranges, for comparison", file=sys.stderr)
        quantize_int8(options.output, plain, calibration, size, average_ranges=False)
        variants["int8_plain_minmax"] = {
            "size_bytes": plain.stat().st_size,
            **compare_to(baseline, score(plain, eval_sets)),
            "shipped": False,
        }
        if "int8" in variants and "int8" not in models:  # rejected, so not on disk: remake it
            models["int8"] = Path(scratch) / "int8-per-channel.onnx"
            quantize_int8(options.output, models["int8"], calibration, size)
        dynamic = Path(scratch) / "int8-dynamic.onnx"
        print("bench: dynamic int8, for its latency", file=sys.stderr)
        quantize_dynamic(options.output, dynamic)
        variants["int8_dynamic"] = {"size_bytes": dynamic.stat().st_size, "shipped": False}
        latency = {name: batch1_latency(path, inputs) for name, path in models.items()}
        latency["int8_per_tensor"] = batch1_latency(per_tensor, inputs)
        latency["int8_dynamic"] = batch1_latency(dynamic, inputs[:DYNAMIC_PHOTOS], repeats=1)
    for name, figures in latency.items():
        variants[name]["latency_batch1"] = figures
    report["machine"] = {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    return report


def quantize_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def batch1_latency(path: Path, inputs: list[np.ndarray], repeats: int = LATENCY_REPEATS) -> dict:
    """Session load time and batch-1 inference latency (ms) over real photos."""
    clock = time.perf_counter()
    session = open_session(path)
    load_s = time.perf_counter() - clock
    session.run(["logits"], {"input": inputs[0]})  # warm-up
    times = []
    for _ in range(repeats):
        for x in inputs:
            clock = time.perf_counter()
            session.run(["logits"], {"input": x})
            times.append((time.perf_counter() - clock) * 1000)
    times.sort()
    return {
        "session_load_s": load_s,
        "median_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "runs": len(times),
    }


def markdown(report: dict[str, Any]) -> str:
    """The README table."""
    v = report["verification"]
    parity, user = v["parity"], v["user_path"]
    variants = report["variants"]
    fp32_ms = variants["fp32"]["latency_batch1"]["median_ms"]
    rows = [
        "| variant | size | test acc. | val. acc. | top-1 agreement with fp32 (val+test) | "
        "max \\|Δ logits\\| | batch-1 latency (median) | session load | shipped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "fp32": "fp32 ONNX (`model.onnx`)",
        "optimized": "optimised graph, `ORT_ENABLE_EXTENDED`",
        "int8": "int8 static QDQ, per-channel weights",
        "int8_per_tensor": "int8 static QDQ, per-tensor weights",
        "int8_plain_minmax": "int8 static QDQ, per-channel, plain MinMax ranges",
        "int8_dynamic": "int8 dynamic (`quantize_dynamic`)",
    }
    for key, label in names.items():
        item = variants.get(key)
        if item is None:
            continue
        acc = item.get("accuracy", {})
        agreement = item.get("top1_agreement_with_fp32", {}).get("validation+test")
        if key == "fp32":
            delta = f"{parity['max_abs_diff']:.1e} vs Keras"
            agreement, shipped = 1.0, "yes"
        elif key == "optimized":
            delta = f"{item['parity_with_keras']['max_abs_diff']:.1e} vs Keras"
            shipped = "yes" if item["accepted"] else "rejected"
        elif "max_abs_diff_vs_fp32" in item:
            delta = f"{item['max_abs_diff_vs_fp32']:.2g} vs fp32"
            shipped = (
                "no (bench only)"
                if key.startswith("int8_")
                else ("yes" if item.get("accepted") else "rejected (over 1 point)")
            )
        else:
            delta, shipped = "", "no (bench only)"
        latency = item.get("latency_batch1")
        speed = (
            f"{latency['median_ms']:.0f} ms ({latency['median_ms'] / fp32_ms:.2f}x fp32) | "
            f"{latency['session_load_s'] * 1000:.0f} ms"
            if latency
            else "(as int8) | -"
        )
        rows.append(
            f"| {label} | {item['size_bytes'] / 1e6:.1f} MB | {_fmt(acc.get('test'))} | "
            f"{_fmt(acc.get('validation'))} | {_fmt(agreement, pct=True)} | {delta} | "
            f"{speed} | {shipped} |"
        )
    timings = report["timings_s"]
    lines = [
        f"Checkpoint `{Path(report['checkpoint']['path']).name}` (run "
        f"`{report['checkpoint']['run']}`, {report['image_size']} px, validation accuracy "
        f"{report['checkpoint']['val_accuracy']:.3f}), opset {report['opset']}; .h5 "
        f"{report['sizes_bytes']['h5'] / 1e6:.1f} MB.",
        "",
        f"- **Parity**, Keras vs onnxruntime on the same batch, all {parity['n_images']} "
        f"validation photos: max |Δ logits| {parity['max_abs_diff']:.1e}, mean "
        f"{parity['mean_abs_diff']:.1e}, top-1 agreement {parity['top1_agreement']:.1%}.",
        f"- **Serving path** (serving preprocessing + onnxruntime, one photo per call, vs "
        f"`load_img` + `preprocess_input` + `model.predict`): max |Δ logits| "
        f"{user['max_abs_diff']:.1e}, top-1 agreement {user['top1_agreement']:.1%}; "
        f"{len(user['preprocessing_corrected'])} photos deliberately corrected, "
        f"{len(user['preprocessing_mismatch'])} unexplained pixel differences.",
        f"- Conversion {timings['convert']:.0f} s; Keras predict "
        f"{v['timings_s']['keras_predict_per_image'] * 1000:.0f} ms/photo and onnxruntime "
        f"{v['timings_s']['onnx_batch_per_image'] * 1000:.0f} ms/photo in batches of 32; "
        f"the whole `python -m convert --optimize --int8` run {report['wall_s']:.0f} s on "
        f"{report['machine']['cpu_count']} CPU cores.",
        "",
        *rows,
        "",
        f"Accuracy on {variants['fp32']['eval_images']['test']} test and "
        f"{variants['fp32']['eval_images']['validation']} validation photos, preprocessed "
        "by the serving package. Latency: onnxruntime on this CPU, one photo per call, "
        f"{LATENCY_PHOTOS} test photos x {LATENCY_REPEATS} (dynamic int8: {DYNAMIC_PHOTOS} "
        "photos x 1).",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if pct else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
