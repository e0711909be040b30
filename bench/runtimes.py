"""Side by side: the same model under Keras, LiteRT and onnxruntime (fp32, optimised, int8).

    python -m bench.runtimes [TRAINING_DIR ...] [--onnx-dir DIR ...]
    # or: make bench-runtimes
    # -> artifacts/bench/runtimes.{json,md}, docs/results/runtimes-DATE.md

Every runtime runs in a **fresh process** that times its cold start (import the runtime,
open the model, first answer on a real photo) and reads its peak RSS right after the
first answer; then batch-1 latency (p50/p95), batch-8 throughput and test accuracy on
every test photo, preprocessed once by ``lambda_function.preprocessing``. The models,
one table per TRAINING_DIR (default ``artifacts/training``): the best run's ``.h5``
(Keras; LiteRT converts it with ``tf.lite.TFLiteConverter.from_keras_model``, fp32) and
``model.onnx``, ``model.optimized.onnx``, ``model.int8.onnx`` of its ``--onnx-dir``
(``make bench-convert`` writes all three for the first). Variants whose file is missing
are left out. The serving measurements below use the first folder's model.

Also measured: the fp32 matmul peak of this CPU (numpy, in a child without
``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``), onnxruntime session options (threads,
spinning, memory arena, memory pattern), preprocessing cost and JPEG draft mode, the
handler end to end (``bench/serve_latency.py``), and installed dependency sizes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import RESULTS, SCRATCH, publish, this_command

REPO = Path(__file__).resolve().parents[1]

GFLOP_299 = 16.7
"""Xception-299 with the dense top: ~8.4 GMAC per image."""

VARIANTS = ("keras", "litert", "ort_fp32", "ort_optimized", "ort_int8")
LABELS = {
    "keras": "Keras `predict` (TF)",
    "litert": "LiteRT fp32 (XNNPACK)",
    "ort_fp32": "onnxruntime fp32",
    "ort_optimized": "onnxruntime optimised graph",
    "ort_int8": "onnxruntime int8 static QDQ",
}
ONNX_FILES = {
    "ort_fp32": "model.onnx",
    "ort_optimized": "model.optimized.onnx",
    "ort_int8": "model.int8.onnx",
}
DEFAULT_VARIANT = "ort_int8"
"""What `make run` ships (docs/performance.md says why)."""

BATCH = 8


@dataclass(frozen=True)
class Settings:
    """One run's options (see ``--help``)."""

    training_dirs: tuple[Path, ...]
    onnx_dirs: tuple[Path, ...]
    out: Path
    results: Path
    data_dir: Path
    iterations: int
    batches: int
    test_limit: int | None
    threads: int
    serve_requests: int
    quick: bool


def main(argv: list[str] | None = None) -> int:
    settings, child = parse_args(argv)
    if child is not None:
        print(json.dumps(child()))
        return 0
    report = run_all(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "runtimes.json").write_text(json.dumps(report, indent=2) + "\n")
    (settings.out / "runtimes.md").write_text(markdown(report))
    publish("runtimes", "Runtimes side by side", markdown(report), settings.results)
    print(markdown(report))
    return 0


def parse_args(argv: list[str] | None) -> tuple[Settings, Callable[[], Any] | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "training_dirs",
        nargs="*",
        type=Path,
        default=[Path("artifacts/training")],
        help="training folders (manifest.json), one table each; the first is the shipped one",
    )
    parser.add_argument(
        "--onnx-dir",
        type=Path,
        action="append",
        help="per training folder, in order: the folder with model.onnx, model.optimized.onnx "
        "and model.int8.onnx (default: artifacts/bench/convert for the first, "
        "TRAINING_DIR/onnx for the others)",
    )
    parser.add_argument("--out", type=Path, default=SCRATCH)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small")),
    )
    parser.add_argument("--iterations", type=int, default=30, help="batch-1 runs per variant")
    parser.add_argument("--batches", type=int, default=4, help="batch-8 runs per variant")
    parser.add_argument("--test-limit", type=int, default=None, help="test photos (default all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--serve-requests", type=int, default=30)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: skip the sizes and handler parts"
    )
    parser.add_argument(
        "--markdown-only", action="store_true", help="re-render runtimes.md from runtimes.json"
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "ARRAYS"), help="internal")
    parser.add_argument("--to-tflite", nargs=2, metavar=("H5", "TFLITE"), help="internal")
    args = parser.parse_args(argv)
    settings = Settings(
        training_dirs=tuple(args.training_dirs),
        onnx_dirs=onnx_dirs(args.training_dirs, args.onnx_dir or []),
        out=args.out,
        results=args.results,
        data_dir=args.data_dir,
        iterations=args.iterations,
        batches=args.batches,
        test_limit=args.test_limit,
        threads=args.threads,
        serve_requests=args.serve_requests,
        quick=args.quick,
    )
    if args.to_tflite:
        return settings, lambda: to_tflite(Path(args.to_tflite[0]), Path(args.to_tflite[1]))
    if args.markdown_only:
        return settings, lambda: rerender(settings.out)
    if args.child:
        kind, model, arrays = args.child
        return settings, lambda: measure_child(kind, Path(model), Path(arrays), settings)
    return settings, None


def rerender(out: Path) -> dict[str, str]:
    """Write ``runtimes.md`` again from ``runtimes.json`` (after a change to the tables)."""
    (out / "runtimes.md").write_text(markdown(json.loads((out / "runtimes.json").read_text())))
    return {"written": str(out / "runtimes.md")}


def onnx_dirs(training_dirs: list[Path], given: list[Path]) -> tuple[Path, ...]:
    defaults = [Path("artifacts/bench/convert")] + [d / "onnx" for d in training_dirs[1:]]
    return tuple(given + defaults[len(given) :])


# --- the parent: prepare once, then one fresh process per measurement -------------------


def run_all(settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    models = [
        measure_model(settings, training_dir, onnx_dir)
        for training_dir, onnx_dir in zip(settings.training_dirs, settings.onnx_dirs, strict=False)
    ]
    shipped = models[0]
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": this_command(),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "threads": settings.threads,
            "batch1_iterations": settings.iterations,
            "batch8_runs": settings.batches,
        },
        "matmul_peak_gflops": matmul_peak(quick=settings.quick),
        "models": models,
    }
    paths = shipped.pop("paths")
    for model in models[1:]:
        model.pop("paths")
    default = paths.get(DEFAULT_VARIANT) or paths.get("ort_fp32")
    arrays, size = Path(shipped["test_arrays"]), shipped["image_size"]
    if default is not None:
        log("session options and preprocessing")
        report["session_options"] = child(
            ["--child", "options", str(default), str(arrays)], settings
        )
        report["session_options"]["model"] = default.name
        report["preprocessing"] = preprocessing_cost(settings, size, arrays)
    if not settings.quick and default is not None:
        log("the handler end to end")
        report["handler"] = handler_end_to_end(default, settings.serve_requests)
        report["installed_mb"] = installed_sizes()
    report["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return report


def measure_model(settings: Settings, manifest_dir: Path, onnx_dir: Path) -> dict[str, Any]:
    """Every runtime on the best run of one training folder."""
    if not (manifest_dir / "manifest.json").is_file():
        raise SystemExit(
            f"bench: expected a training folder with manifest.json. Received: {manifest_dir} "
            "(train one with `make train`)"
        )
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    run = next(r for r in manifest["runs"] if r["name"] == manifest["best_run"])
    size, labels = run["config"]["image_size"], run["labels"]
    work = settings.out / "runtimes"
    work.mkdir(parents=True, exist_ok=True)
    arrays = cache_test_arrays(settings, labels, size, work)
    models = {"keras": manifest_dir / run["best_checkpoint"]}
    tflite = work / f"model-{size}.tflite"
    if not tflite.is_file() or tflite.stat().st_mtime < models["keras"].stat().st_mtime:
        log(f"converting {models['keras'].name} to LiteRT")
        child(["--to-tflite", str(models["keras"]), str(tflite)], settings)
    models["litert"] = tflite
    for variant, name in ONNX_FILES.items():
        if (onnx_dir / name).is_file():
            models[variant] = onnx_dir / name
    results = {}
    for variant, path in models.items():
        log(f"measuring {variant} ({path})")
        results[variant] = child(["--child", variant, str(path), str(arrays)], settings)
        results[variant]["model_bytes"] = path.stat().st_size
        results[variant]["model_mb"] = round(path.stat().st_size / 1e6, 1)
    return {
        "run": run["name"],
        "image_size": size,
        "h5": str(models["keras"]),
        "test_photos": int(np.load(arrays / "y.npy").size),
        "test_arrays": str(arrays),
        "gflop_per_image": round(GFLOP_299 * (size / 299) ** 2, 2),
        "variants": results,
        "paths": models,
    }


def cache_test_arrays(settings: Settings, labels: list[str], size: int, work: Path) -> Path:
    """The test split as serving sees it (uint8, before scaling), plus JPEG-draft pixels."""
    from convert.images import labelled_split, spread_sample
    from lambda_function import preprocessing

    photos = spread_sample(labelled_split(settings.data_dir, "test", labels), settings.test_limit)
    target = work / f"test-{size}-{len(photos)}"
    if (target / "y.npy").is_file():
        return target
    log(f"preprocessing {len(photos)} test photos at {size}")
    data = [p.path.read_bytes() for p in photos]
    target.mkdir(parents=True, exist_ok=True)
    np.save(target / "x.npy", np.stack([preprocessing.load_pixels(b, size) for b in data]))
    np.save(target / "draft.npy", np.stack([draft_pixels(b, size) for b in data]))
    np.save(target / "y.npy", np.array([p.label for p in photos]))
    return target


def draft_pixels(data: bytes, size: int) -> np.ndarray:
    """The contract's pixels, except that the JPEG decoder may downscale by 1/2..1/8 first."""
    from PIL import Image

    from lambda_function import preprocessing

    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (size, size))  # a no-op unless the photo is >= 2x the target size
    return preprocessing.pixels(preprocessing.to_rgb(preprocessing.upright(image)), size)


def child(args: list[str], settings: Settings, env: dict[str, str] | None = None) -> Any:
    """Run this script in a fresh process; its last stdout line is the JSON answer."""
    command = [sys.executable, "-m", "bench.runtimes", *args, *child_flags(settings)]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: the measuring process failed: {args}\n{result.stderr[-3000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if isinstance(answer, dict) and "xnnpack" in answer:
        answer["xnnpack"] = "XNNPACK delegate for CPU" in result.stderr
    return answer


def child_flags(settings: Settings) -> list[str]:
    return [
        f"--iterations={settings.iterations}",
        f"--batches={settings.batches}",
        f"--threads={settings.threads}",
    ]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the children -----------------------------------------------------------------------


def to_tflite(h5: Path, target: Path) -> dict[str, Any]:
    """fp32 LiteRT flatbuffer of the Keras checkpoint, through the TFLite converter."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(h5, compile=False)
    target.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return {"tflite": str(target)}


class Runner:
    """One runtime's model behind ``run(batch) -> logits``."""

    def __init__(self, kind: str, path: Path, threads: int) -> None:
        self.kind = kind
        if kind == "keras":
            import keras

            self.model = keras.models.load_model(path, compile=False)
        elif kind == "litert":
            from ai_edge_litert.interpreter import Interpreter

            self.interpreters: dict[int, Any] = {}
            self.open_litert = lambda: Interpreter(model_path=str(path), num_threads=threads)
        else:
            from lambda_function.model import Classifier

            self.session = Classifier.load(path, intra_op_threads=threads).session

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.kind == "keras":
            return self.model.predict(batch, verbose=0)
        if self.kind == "litert":
            return self._litert(batch)
        return self.session.run(None, {"input": batch})[0]

    def _litert(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self.interpreters.get(len(batch))
        if interpreter is None:  # one interpreter per batch size: resizing reallocates
            interpreter = self.interpreters[len(batch)] = self.open_litert()
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, batch.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def measure_child(kind: str, path: Path, arrays: Path, settings: Settings) -> dict[str, Any]:
    if kind == "options":
        return session_options(path, arrays, settings)
    t0 = time.perf_counter()
    x = np.load(arrays / "x.npy", mmap_mode="r")  # only the pages read count in the RSS
    first = scale(x[:1])
    t_data = time.perf_counter()
    runner = Runner(kind, path, settings.threads)
    t_loaded = time.perf_counter()
    runner.run(first)
    t_first = time.perf_counter()
    peak_rss = peak_rss_mb()
    y = np.load(arrays / "y.npy")
    photos = [scale(x[i : i + 1]) for i in range(min(len(x), settings.iterations))]
    batch1 = timed([partial(runner.run, p) for p in photos])
    batch8 = scale(np.resize(x, (BATCH, *x.shape[1:])))
    runner.run(batch8)  # the first batch of 8 sets up its buffers
    batch8_ms = timed([lambda: runner.run(batch8)] * settings.batches)
    predictions = np.concatenate(
        [
            runner.run(pad(scale(x[i : i + BATCH])))[: len(x[i : i + BATCH])]
            for i in range(0, len(x), BATCH)
        ]
    ).argmax(axis=1)
    answer = {
        "cold_start_s": {
            "load_arrays": round(t_data - t0, 3),
            "import_and_open": round(t_loaded - t_data, 3),
            "first_answer": round(t_first - t_loaded, 3),
            "total": round(t_first - t_data, 3),
        },
        "peak_rss_mb": peak_rss,
        "batch1_ms": batch1,
        "batch8_images_per_s": round(BATCH * 1000 / batch8_ms["p50"], 1),
        "test_accuracy": round(float((predictions == y).mean()), 4),
        "threads": settings.threads,
    }
    if kind == "litert":
        answer["xnnpack"] = None  # the parent reads the runtime's log line
    if kind.startswith("ort") and settings.threads != 1:
        single = Runner(kind, path, 1)
        single.run(photos[0])
        answer["batch1_ms_1_thread"] = timed([partial(single.run, p) for p in photos])
    return answer


def peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` starts afresh at exec; ``ru_maxrss`` would not:
    Linux carries the forking parent's peak into it (the parent holds the test arrays)."""
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def session_options(path: Path, arrays: Path, settings: Settings) -> dict[str, Any]:
    """Batch-1 latency of one model under onnxruntime session settings."""
    import onnxruntime as ort

    x = np.load(arrays / "x.npy", mmap_mode="r")
    photos = [scale(x[i : i + 1]) for i in range(min(len(x), settings.iterations))]
    serving = {"spinning": False, "arena": True, "mem_pattern": True}
    cases = {
        f"{threads} thread(s), {name}": {**serving, **change, "threads": threads}
        for threads in sorted({1, settings.threads})
        for name, change in {
            "serving options (no spinning)": {},
            "spinning on": {"spinning": True},
            "no memory arena": {"arena": False},
            "no memory pattern": {"mem_pattern": False},
        }.items()
    }
    results = {}
    for name, case in cases.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = case["threads"]
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = case["arena"]
        options.enable_mem_pattern = case["mem_pattern"]
        spinning = "1" if case["spinning"] else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"input": photos[0]})
        results[name] = {
            **case,
            "batch1_ms": timed([partial(session.run, None, {"input": p}) for p in photos]),
        }
    return {"cases": results}


def scale(pixels: np.ndarray) -> np.ndarray:
    from lambda_function.preprocessing import scale as contract_scale

    return contract_scale(pixels)


def pad(batch: np.ndarray) -> np.ndarray:
    """A full batch of ``BATCH`` (repeating the last image), so every runtime sees one shape."""
    if len(batch) == BATCH:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], BATCH - len(batch), axis=0)])


def timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    samples = []
    for call in calls:
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 2),
        "p95": round(samples[round(0.95 * (len(samples) - 1))], 2),
        "n": len(samples),
    }


# --- machine, peak, preprocessing, handler, sizes ---------------------------------------


MATMUL = """
import json, time, numpy as np
n = {n}
a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
a @ b
best = min(
    (lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range({runs})
)
print(json.dumps(round(2 * n**3 / best / 1e9, 1)))
"""


def matmul_peak(quick: bool) -> dict[str, Any]:
    """Best fp32 GFLOP/s of numpy's matmul, 1 thread and all cores, without OPENBLAS_* hints."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    env["PYTHONPATH"] = str(REPO)
    n, runs = (512, 3) if quick else (2048, 10)
    code = MATMUL.format(n=n, runs=runs)
    peak = {"n": n}
    for threads in (1, os.cpu_count() or 1):
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "OPENBLAS_NUM_THREADS": str(threads)},
            capture_output=True,
            text=True,
            check=True,
        )
        peak[f"{threads}_thread_gflops"] = json.loads(result.stdout)
    return peak


def preprocessing_cost(settings: Settings, size: int, arrays: Path) -> dict[str, Any]:
    """Decode + resize + scale per photo, with and without JPEG draft, and what draft changes."""
    from convert.images import labelled_split, spread_sample
    from lambda_function import preprocessing

    labels = sorted(p.name for p in (settings.data_dir / "test").iterdir() if p.is_dir())
    photos = spread_sample(labelled_split(settings.data_dir, "test", labels), settings.iterations)
    data = [p.path.read_bytes() for p in photos]
    large = large_photo(data[0])
    contract = np.load(arrays / "x.npy").astype(np.int16)
    draft = np.load(arrays / "draft.npy").astype(np.int16)
    changed = np.abs(contract - draft).reshape(len(contract), -1).max(axis=1)

    def per_photo(function: Callable[[bytes, int], Any], images: list[bytes]) -> dict[str, float]:
        return timed([partial(function, b, size) for b in images])

    draft_scaled = lambda b, s: preprocessing.scale(draft_pixels(b, s))  # noqa: E731
    large_pixels = preprocessing.load_pixels(large, size).astype(np.int16)
    return {
        "dataset_photos_ms": per_photo(preprocessing.preprocess, data),
        "dataset_photos_draft_ms": per_photo(draft_scaled, data),
        "dataset_photos_changed_by_draft": int((changed > 0).sum()),
        "dataset_photos_max_abs_diff_uint8": int(changed.max()),
        "large_photo": "first test photo upscaled to 3024x4032, JPEG q90",
        "large_photo_ms": per_photo(preprocessing.preprocess, [large] * 5),
        "large_photo_draft_ms": per_photo(draft_scaled, [large] * 5),
        "large_photo_max_abs_diff_uint8": int(
            np.abs(large_pixels - draft_pixels(large, size).astype(np.int16)).max()
        ),
        "large_photo_max_abs_diff_scaled": float(
            np.abs(preprocessing.preprocess(large, size) - draft_scaled(large, size)).max()
        ),
    }


def large_photo(data: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((3024, 4032), Image.Resampling.BICUBIC)
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def handler_end_to_end(model: Path, requests: int) -> dict[str, Any]:
    """``bench/serve_latency.py``'s fresh-process run: URL -> JSON vs inference alone."""
    from bench import serve_latency

    runs = {}
    for threads in (1, os.cpu_count() or 1):
        run = serve_latency.run_fresh_process(model, threads, requests)
        warm = run["warm_ms"]
        runs[threads] = {
            "cold_start_s": run["cold_start_s"],
            "url_end_to_end_p50_ms": warm["url_end_to_end"]["p50"],
            "upload_end_to_end_p50_ms": warm["upload_end_to_end"]["p50"],
            "inference_p50_ms": warm["inference"]["p50"],
            "decode_resize_scale_p50_ms": warm["decode_resize_scale"]["p50"],
            "ratio_url_to_inference": round(
                warm["url_end_to_end"]["p50"] / warm["inference"]["p50"], 3
            ),
        }
    return {"model": model.name, "by_threads": runs}


def installed_sizes() -> dict[str, float]:
    """Installed MB of what each runtime pulls in (its dependency closure, from this venv)."""
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    serve = pyproject["project"]["optional-dependencies"]["serve"]
    return {
        "serve extra (numpy, Pillow, onnxruntime)": closure_mb(serve),
        "tensorflow (+ keras, numpy, ...)": closure_mb(["tensorflow"]),
        "ai-edge-litert (+ numpy)": closure_mb(["ai-edge-litert"]),
    }


def closure_mb(requirements: list[str]) -> float:
    from packaging.requirements import Requirement

    pending, seen = list(requirements), {}
    while pending:
        requirement = Requirement(pending.pop())
        name = requirement.name.lower()
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = sum(f.size or 0 for f in distribution.files or [])
        pending.extend(distribution.requires or [])
    return round(sum(seen.values()) / 1e6, 1)


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), ""
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "flags": [f for f in wanted if f in flags],
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    names = ("tensorflow", "keras", "ai-edge-litert", "onnxruntime", "numpy", "pillow")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# --- the tables -------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    peak = report["matmul_peak_gflops"]
    peak_all = peak[f"{m['cores']}_thread_gflops"]
    lines = [
        f"{report['created_at']}, `{report['command'].strip()}`; {m['cores']} cores, "
        f"{m['cpu']} ({', '.join(m['flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        f"{s['threads']} threads; batch 1: {s['batch1_iterations']} photos, batch 8: "
        f"{s['batch8_runs']} runs. fp32 matmul peak (numpy {peak['n']}²): {peak_all} GFLOP/s "
        f"on {m['cores']} cores, {peak['1_thread_gflops']} on 1.",
    ]
    for model in report["models"]:
        lines += model_table(model, peak_all)
    lines += options_table(report) + preprocessing_lines(report) + handler_lines(report)
    if "installed_mb" in report:
        sizes = "; ".join(f"{k}: {v} MB" for k, v in report["installed_mb"].items())
        lines += ["", f"Installed (dependency closure in this venv): {sizes}."]
    lines += ["", f"Bench wall time {report['bench_wall_s']} s.", ""]
    return "\n".join(lines)


def model_table(model: dict[str, Any], peak: float) -> list[str]:
    variants, gflop = model["variants"], model["gflop_per_image"]
    fp32 = variants.get("ort_fp32", {}).get("batch1_ms", {}).get("p50")
    keras = variants.get("keras", {}).get("batch1_ms", {}).get("p50")
    lines = [
        "",
        f"Model `{model['run']}` at {model['image_size']} px ({gflop} GFLOP per image); "
        f"accuracy on {model['test_photos']} test photos.",
        "",
        "| runtime | model | test acc. | batch 1 p50 / p95 | vs ORT fp32 | vs Keras "
        "| batch 8 | GFLOP/s (% of fp32 peak) | cold start | peak RSS | 1 thread p50 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, r in variants.items():
        p50, p95 = r["batch1_ms"]["p50"], r["batch1_ms"]["p95"]
        gflops = gflop * 1000 / p50
        single = r.get("batch1_ms_1_thread", {}).get("p50")
        lines.append(
            f"| {LABELS[variant]} | {r['model_mb']} MB | {r['test_accuracy']:.3f} "
            f"| {p50:.1f} / {p95:.1f} ms | {ratio(fp32, p50)} | {ratio(keras, p50)} "
            f"| {r['batch8_images_per_s']} img/s | {gflops:.0f} ({gflops / peak:.0%}) "
            f"| {r['cold_start_s']['total']:.2f} s | {r['peak_rss_mb']:.0f} MB "
            f"| {f'{single:.1f} ms' if single else '-'} |"
        )
    if "litert" in variants:
        lines += ["", f"LiteRT XNNPACK delegate in use: {variants['litert'].get('xnnpack')}."]
    return lines


def options_table(report: dict[str, Any]) -> list[str]:
    options = report.get("session_options")
    if not options:
        return []
    lines = [
        "",
        f"onnxruntime session options, `{options['model']}`, batch 1:",
        "",
        "| setting | p50 / p95 |",
        "|---|---|",
    ]
    for name, case in options["cases"].items():
        lines.append(
            f"| {name} | {case['batch1_ms']['p50']:.1f} / {case['batch1_ms']['p95']:.1f} ms |"
        )
    return lines


def preprocessing_lines(report: dict[str, Any]) -> list[str]:
    p = report.get("preprocessing")
    if not p:
        return []
    return [
        "",
        f"Preprocessing (decode + resize + scale), p50: dataset photos "
        f"{p['dataset_photos_ms']['p50']:.2f} ms, with JPEG draft "
        f"{p['dataset_photos_draft_ms']['p50']:.2f} ms ({p['dataset_photos_changed_by_draft']} "
        f"test photos changed, max |Δ| {p['dataset_photos_max_abs_diff_uint8']}/255); "
        f"{p['large_photo']}: {p['large_photo_ms']['p50']:.1f} ms, with draft "
        f"{p['large_photo_draft_ms']['p50']:.1f} ms, max |Δ| "
        f"{p['large_photo_max_abs_diff_uint8']}/255 ({p['large_photo_max_abs_diff_scaled']:.2f} "
        "in model input units).",
    ]


def handler_lines(report: dict[str, Any]) -> list[str]:
    h = report.get("handler")
    if not h:
        return []
    lines = [
        "",
        f"Handler end to end (`bench/serve_latency.py`, `{h['model']}`, fresh process):",
        "",
        "| ORT threads | cold start | URL → JSON p50 | upload → JSON p50 | inference p50 "
        "| decode+resize+scale p50 | URL→JSON / inference | upload→JSON / inference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for threads, r in h["by_threads"].items():
        upload = r["upload_end_to_end_p50_ms"]
        lines.append(
            f"| {threads} | {r['cold_start_s']['total']} s | {r['url_end_to_end_p50_ms']} ms "
            f"| {upload} ms | {r['inference_p50_ms']} ms | {r['decode_resize_scale_p50_ms']} ms "
            f"| {r['ratio_url_to_inference']:.2f}x | {upload / r['inference_p50_ms']:.2f}x |"
        )
    return lines


def ratio(reference: float | None, value: float) -> str:
    return f"{reference / value:.2f}x" if reference else "-"


if __name__ == "__main__":
    raise SystemExit(main())
