"""Cold start and warm latency of the Lambda handler at 299, and the serve dependencies' size.

    python -m bench.serve_latency [--model PATH] [--threads 1,2] [--requests 30]
    # or: make bench-serve
    # -> artifacts/bench/serve_latency.json, docs/results/serve-latency-DATE.md

Each thread setting runs in a **fresh process** that times, in order: importing the
handler, loading the model (session + warm-up inference), the first answer, then warm
requests end to end (an API Gateway event naming a photo on a local HTTP server ->
fetch, decode, resize, infer -> the JSON response), plus each stage on its own.
``ORT_INTRA_OP_THREADS=1`` is what a 1,769 MB Lambda gets (one vCPU).

The model is the one the function would load from the repository: ``make run``'s
``artifacts/model/serve.onnx`` (``--model`` picks another). Without it, a stand-in of the
same shape is built: Keras Xception at 299 (``XCEPTION_WEIGHTS``) + pooling + a 10-way
dense layer, converted by ``convert.to_onnx``; latency does not depend on what the weights
learned, and the JSON says which model was measured.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.results import RESULTS, publish
from lambda_function.config import SERVED_MODEL

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "artifacts" / "bench"
DEFAULT_MODEL = REPO / SERVED_MODEL
STAND_IN = OUT / "xception299-standin.onnx"
SERVE_EXTRA = "serve"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", default="1,2", help="comma-separated ORT thread counts")
    parser.add_argument("--requests", type=int, default=40, help="warm requests per setting")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_in_this_process(args.model, args.requests)))
        return 0
    model, source = pick_model(args.model)
    model.read_bytes()  # every run starts with the file in the page cache, as the first did not
    runs = [run_fresh_process(model, int(n), args.requests) for n in args.threads.split(",")]
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "path": str(model),
            "source": source,
            "mb": round(model.stat().st_size / 1e6, 1),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "serve_dependencies": serve_dependency_size(),
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "serve_latency.md").write_text(markdown(report))
    publish("serve-latency", "Serving latency", markdown(report), args.results)
    print(markdown(report))
    return 0


def pick_model(requested: Path | None) -> tuple[Path, str]:
    """The model to measure, and a line saying what it is."""
    if requested is None and not DEFAULT_MODEL.is_file():
        if not STAND_IN.is_file():
            build_stand_in(STAND_IN)
        return STAND_IN, "stand-in: Xception 299 + GAP + Dense(10), untrained top"
    path = requested or DEFAULT_MODEL
    import onnxruntime as ort

    from lambda_function.model_metadata import ModelMetadata

    props = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    meta = ModelMetadata.from_props(props)
    return path, (
        f"trained and converted, checkpoint {meta.version}, {meta.image_size} px, "
        f"validation accuracy {meta.val_accuracy:.3f}"
    )


def build_stand_in(path: Path) -> None:
    """An Xception-shaped 299 model with the service's metadata (see the module doc)."""
    import keras
    import onnx

    from convert.metadata import attach_metadata
    from convert.to_onnx import keras_to_onnx
    from lambda_function.model_metadata import ModelMetadata

    weights = os.environ.get("XCEPTION_WEIGHTS", "imagenet")
    base = keras.applications.Xception(
        weights=weights, include_top=False, input_shape=(299, 299, 3)
    )
    inputs = keras.Input((299, 299, 3), name="input")
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(pooled))
    proto = keras_to_onnx(model, 299)
    labels: tuple[str, ...] = ("dress", "hat", "longsleeve", "outwear", "pants")
    labels += ("shirt", "shoes", "shorts", "skirt", "t-shirt")
    attach_metadata(proto, ModelMetadata(labels=labels, image_size=299, checkpoint_sha256="0" * 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def run_fresh_process(model: Path, threads: int, requests: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "ORT_INTRA_OP_THREADS": str(threads),
        "ALLOW_LOOPBACK_FOR_TESTS": "1",  # the bench's photo server is on 127.0.0.1
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "bench.serve_latency", "--child", "--model", str(model)]
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "--requests", str(requests)], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{result.stderr}")
    run = json.loads(result.stdout.strip().splitlines()[-1])
    run["threads"] = threads
    run["process_wall_s"] = round(time.perf_counter() - started, 3)
    return run


def measure_in_this_process(model: Path, requests: int) -> dict[str, Any]:
    """Everything timed from this process's first line of real work."""
    t0 = time.perf_counter()
    from lambda_function import handler

    t_import = time.perf_counter()
    service = handler.get_service()
    t_loaded = time.perf_counter()

    from lambda_function.fetch import fetch
    from lambda_function.preprocessing import preprocess
    from tests.lambda_testing import FakeContext, send, serving

    photo = sample_photo()
    size = service.classifier.metadata.image_size
    with serving({"/photo.jpg": send(photo)}) as server:
        url = server.url("/photo.jpg")
        event = api_event({"url": url})
        first = handler.lambda_handler(event, FakeContext())
        t_first = time.perf_counter()
        assert first["statusCode"] == 200, first

        end_to_end = timed(requests, lambda: handler.lambda_handler(event, FakeContext()))
        upload = api_event(None, photo)
        uploaded = timed(requests, lambda: handler.lambda_handler(upload, FakeContext()))
        fetch_only = timed(requests, lambda: fetch(url, service.policy, time.monotonic() + 10))
    pre = timed(requests, lambda: preprocess(photo, size))
    x = preprocess(photo, size)
    infer = timed(requests, lambda: service.classifier.predict(x))
    return {
        "cold_start_s": {
            "import": round(t_import - t0, 3),
            "model_load_and_warm_up": round(t_loaded - t_import, 3),
            "first_answer": round(t_first - t_loaded, 3),
            "total": round(t_first - t0, 3),
        },
        "warm_ms": {
            "url_end_to_end": end_to_end,
            "upload_end_to_end": uploaded,
            "fetch": fetch_only,
            "decode_resize_scale": pre,
            "inference": infer,
        },
        "photo_bytes": len(photo),
        "image_size": size,
    }


def timed(n: int, function: Any) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 1),
        "p90": round(samples[int(0.9 * (len(samples) - 1))], 1),
        "mean": round(statistics.fmean(samples), 1),
        "n": n,
    }


def sample_photo() -> bytes:
    """A real test photo when the dataset is there, else a synthetic one of the same size."""
    data_dir = Path(os.environ.get("DATA_DIR", REPO / "data" / "clothing-dataset-small"))
    photos = sorted((data_dir / "test" / "pants").glob("*.jpg"))
    if photos:
        return photos[0].read_bytes()
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((400, 533), 40).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def api_event(body: dict[str, Any] | None, image: bytes = b"") -> dict[str, Any]:
    """An HTTP API (v2) event as in events/: a JSON body, or a raw image upload."""
    event = json.loads((REPO / "events" / "http-api-url.json").read_text())
    if body is not None:
        event["body"] = json.dumps(body)
    else:
        event["headers"]["content-type"] = "image/jpeg"
        event["body"] = base64.b64encode(image).decode()
        event["isBase64Encoded"] = True
    return event


def serve_dependency_size() -> dict[str, Any]:
    """Installed size of the serve extra and everything it pulls in, from this venv."""
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pending = list(pyproject["project"]["optional-dependencies"][SERVE_EXTRA])
    seen: dict[str, int] = {}
    while pending:
        requirement = Requirement(pending.pop())
        name = requirement.name.lower()
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        distribution = metadata.distribution(name)
        seen[name] = sum(f.size or 0 for f in distribution.files or [])
        pending.extend(distribution.requires or [])
    return {
        "total_mb": round(sum(seen.values()) / 1e6, 1),
        "packages_mb": {k: round(v / 1e6, 1) for k, v in sorted(seen.items())},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Model: {report['model']['source']} ({report['model']['mb']} MB); "
        f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}.",
        "",
        "| ORT threads | import | model load + warm-up | first answer | cold total "
        "| warm URL→JSON p50 / p90 | warm upload p50 | inference p50 | decode+resize p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        cold, warm = run["cold_start_s"], run["warm_ms"]
        lines.append(
            f"| {run['threads']} | {cold['import']} s | {cold['model_load_and_warm_up']} s "
            f"| {cold['first_answer']} s | {cold['total']} s "
            f"| {warm['url_end_to_end']['p50']} / {warm['url_end_to_end']['p90']} ms "
            f"| {warm['upload_end_to_end']['p50']} ms | {warm['inference']['p50']} ms "
            f"| {warm['decode_resize_scale']['p50']} ms |"
        )
    deps = report["serve_dependencies"]
    sizes = ", ".join(f"{k} {v}" for k, v in deps["packages_mb"].items())
    lines += ["", f"Serve dependencies installed: {deps['total_mb']} MB ({sizes} MB).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
