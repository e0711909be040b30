"""Soak and concurrency: thousands of good and hostile requests in one process, no leaks.

    python -m bench.soak [--invocations 5000] [--model tiny|real|PATH] [--clients 8]
    # or: make bench-soak  -> artifacts/bench/soak.{json,md}, docs/results/soak-DATE.md
    python -m bench.soak --model real --name soak-real   # the trained 299 model

1. **Soak**: ``--invocations`` calls of ``lambda_handler`` in this process, cycling
   through a mix of good requests (URLs, uploads, API Gateway events, batches) and bad
   ones (blocked addresses, 404s, HTML, truncated images, decompression bombs, broken
   events, redirect loops) served by a loopback image server. Every answer must be a
   2xx or 4xx. After a warm-up, resident memory (``VmRSS``), open file descriptors
   (``/proc/self/fd``) and threads are sampled; at the end they must not have grown
   (memory by under 10%).
2. **Concurrency**: a local HTTP front (a ``ThreadingHTTPServer`` turning each POST into
   an HTTP API v2 event for ``lambda_handler``, as API Gateway would) and ``--clients``
   parallel clients; latency p50/p99 and peak memory (``VmHWM``).

``--model tiny`` (default) is the 32 px test model of ``tests/lambda_testing.py``, so
the run measures the service around the model; ``real`` is the served model,
``artifacts/model/serve.onnx``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import io
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.results import RESULTS, publish
from lambda_function.config import SERVED_MODEL
from tests import images
from tests.lambda_testing import (
    FakeContext,
    build_model,
    image_bytes,
    load_event,
    redirect,
    send,
    serving,
)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "artifacts" / "bench"
REAL_MODEL = REPO / SERVED_MODEL
MAX_RSS_GROWTH = 0.10


@dataclass(frozen=True)
class SoakConfig:
    """What to run: invocations, the model and the concurrency test's shape."""

    invocations: int = 5000
    warmup: int = 500
    model: str = "tiny"
    clients: int = 8
    requests_per_client: int = 50
    sample_every: int = 250


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=SoakConfig.invocations)
    parser.add_argument("--warmup", type=int, default=SoakConfig.warmup)
    parser.add_argument("--model", default="tiny", help="tiny, real or a path to a model.onnx")
    parser.add_argument("--clients", type=int, default=SoakConfig.clients)
    parser.add_argument("--requests-per-client", type=int, default=SoakConfig.requests_per_client)
    parser.add_argument("--name", default="soak", help="report names: artifacts/bench/NAME.*")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    args = parser.parse_args(argv)
    config = SoakConfig(
        invocations=args.invocations,
        warmup=min(args.warmup, args.invocations // 2),
        model=args.model,
        clients=args.clients,
        requests_per_client=args.requests_per_client,
    )
    report = run(config)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / f"{args.name}.md").write_text(markdown(report))
    publish(args.name, "Soak", markdown(report), args.results)
    print(markdown(report))
    return 0 if report["passed"] else 1


def run(config: SoakConfig) -> dict[str, Any]:
    """Both tests in this process; the report says what was measured and whether it passed."""
    with tempfile.TemporaryDirectory() as folder, _function(config.model, Path(folder)) as model:
        from lambda_function import handler

        handler.get_service()  # loaded and warm, as after a cold start
        # The handler prints one JSON log line per request; thousands of them are noise here.
        with serving(_routes()) as server, contextlib.redirect_stdout(io.StringIO()):
            events = _mix(server)
            soak = _soak(handler.lambda_handler, events, config)
            concurrency = _concurrency(handler.lambda_handler, server, config)
    passed = soak["passed"] and concurrency["errors_5xx"] == 0
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model,
        "config": asdict(config),
        "machine": {"cpus": os.cpu_count()},
        "soak": soak,
        "concurrency": concurrency,
        "passed": passed,
    }


@contextmanager
def _function(model: str, folder: Path) -> Iterator[str]:
    """The environment the handler reads: the chosen model, loopback allowed for the server."""
    if model == "tiny":
        path, name = build_model(folder / "tiny.onnx"), "tiny test model (32 px)"
    else:
        path = REAL_MODEL if model == "real" else Path(model)
        if not path.is_file():
            raise SystemExit(f"No model at {path}. Run `make run` or pass --model tiny.")
        name = str(path)
    saved = {k: os.environ.get(k) for k in ("MODEL_PATH", "ALLOW_LOOPBACK_FOR_TESTS")}
    os.environ.update({"MODEL_PATH": str(path), "ALLOW_LOOPBACK_FOR_TESTS": "1"})
    from lambda_function import handler

    handler.get_service.cache_clear()
    try:
        yield name
    finally:
        handler.get_service.cache_clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _routes() -> dict[str, Any]:
    jpeg = images.encode(images.noise("RGB", size=(400, 300)), "JPEG", quality=85)
    return {
        "/photo.jpg": send(jpeg),
        "/photo.png": send(images.encode(images.noise("RGBA", size=(120, 90)), "PNG")),
        "/page.html": send(b"<html>not an image</html>", content_type="text/html"),
        "/truncated.jpg": send(jpeg[: len(jpeg) // 2]),
        "/huge": send(b"x", Content_Length=str(10**9)),
        "/loop": redirect("/loop"),
        "/moved": redirect("/photo.jpg", 301),
    }


def _mix(server: Any) -> list[tuple[str, Any]]:
    """(name, event) pairs, good and bad, in the order the soak cycles through them."""
    jpeg = image_bytes(size=(300, 200))
    b64 = base64.b64encode(jpeg).decode()
    bomb = images.png_claiming(60_000, 60_000)

    def api(body: str, content_type: str = "application/json", encoded: bool = False) -> Any:
        event = load_event("http-api-url.json")
        event["headers"]["content-type"] = content_type
        event["body"], event["isBase64Encoded"] = body, encoded
        return event

    return [
        ("good url", {"url": server.url("/photo.jpg")}),
        ("good upload", {"image": b64}),
        ("good redirect", {"url": server.url("/moved")}),
        ("good api url", api(json.dumps({"url": server.url("/photo.png")}))),
        ("good api raw upload", api(b64, "image/jpeg", encoded=True)),
        ("batch", {"urls": [server.url(p) for p in ("/photo.jpg", "/missing", "/photo.png")]}),
        ("404", {"url": server.url("/missing")}),
        ("html", {"url": server.url("/page.html")}),
        ("truncated", {"url": server.url("/truncated.jpg")}),
        ("declared too large", {"url": server.url("/huge")}),
        ("redirect loop", {"url": server.url("/loop")}),
        ("metadata service", {"url": "http://169.254.169.254/latest/meta-data/"}),
        ("bomb", {"image": base64.b64encode(bomb).decode()}),
        ("tiff", {"image": base64.b64encode(images.encode(images.noise("RGB"), "TIFF")).decode()}),
        ("invalid base64", {"image": "not base64!"}),
        ("two sources", {"url": "http://example.com/a.jpg", "image": b64}),
        ("api not json", api("{not json")),
        ("api html body", api("<html/>", "text/html")),
    ]  # fmt: skip


def status_of(response: dict[str, Any]) -> int:
    return int(response["statusCode"]) if "statusCode" in response else response.get("status", 200)


def _soak(
    handler: Callable[..., Any], events: list[tuple[str, Any]], config: SoakConfig
) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    by_case: dict[str, set[int]] = {}
    samples: list[dict[str, Any]] = []
    warm: dict[str, Any] = {}
    started = time.monotonic()
    for i in range(config.invocations):
        if i == config.warmup:
            time.sleep(0.5)  # the image server's handler threads finish
            warm = _resources()
        name, event = events[i % len(events)]
        status = status_of(handler(event, FakeContext(aws_request_id=f"soak-{i}")))
        statuses[f"{status // 100}xx"] += 1
        by_case.setdefault(name, set()).add(status)
        if i >= config.warmup and (i - config.warmup) % config.sample_every == 0:
            samples.append({"invocation": i, **_resources()})
    seconds = time.monotonic() - started
    time.sleep(0.5)  # the image server's last handler threads finish
    end = _resources()
    growth = (end["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"]
    leaks = {
        "fds": end["fds"] - warm["fds"],
        "threads": end["threads"] - warm["threads"],
    }
    return {
        "invocations": config.invocations,
        "seconds": round(seconds, 1),
        "per_second": round(config.invocations / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "cases": {name: sorted(codes) for name, codes in by_case.items()},
        "warm": warm,
        "end": end,
        "rss_growth": round(growth, 4),
        "grown": leaks,
        "samples": samples,
        "passed": statuses["5xx"] == 0
        and growth < MAX_RSS_GROWTH
        and leaks["fds"] <= 0
        and leaks["threads"] <= 0,
    }


def _resources() -> dict[str, Any]:
    """Memory, fds and threads now; after a collection, so only what cannot be freed counts
    (an exception's traceback can hold a closed request's socket in a cycle until then)."""
    gc.collect()
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "peak_rss_kb": int(fields["VmHWM"].split()[0]),
        "fds": len(list(Path("/proc/self/fd").iterdir())),
        "threads": threading.active_count(),
        "os_threads": len(list(Path("/proc/self/task").iterdir())),
    }


class _Front(ThreadingHTTPServer):
    """A local stand-in for API Gateway: each POST becomes an HTTP API v2 event."""

    daemon_threads = True

    def __init__(self, handler: Callable[..., Any]) -> None:
        super().__init__(("127.0.0.1", 0), _FrontHandler)
        self.handler = handler


class _FrontHandler(BaseHTTPRequestHandler):
    server: _Front
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed ACK
    wbufsize = 1 << 16

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = load_event("http-api-url.json")
        event["headers"] = {k.lower(): v for k, v in self.headers.items()}
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        response = self.server.handler(event, FakeContext())
        payload = response["body"].encode()
        self.send_response(response["statusCode"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def _concurrency(handler: Callable[..., Any], server: Any, config: SoakConfig) -> dict[str, Any]:
    front = _Front(handler)
    thread = threading.Thread(target=front.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    bodies = [
        json.dumps({"url": server.url("/photo.jpg")}).encode(),
        json.dumps({"image": base64.b64encode(image_bytes(size=(300, 200))).decode()}).encode(),
        json.dumps({"url": server.url("/missing")}).encode(),
        b"{not json",
    ]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", front.server_address[1], timeout=60)
        for i in range(config.requests_per_client):
            body = bodies[(number + i) % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[f"{response.status // 100}xx"] += 1
        connection.close()

    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(config.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    seconds = time.monotonic() - started
    front.shutdown()
    front.server_close()
    ordered = sorted(latencies)
    return {
        "clients": config.clients,
        "requests": len(ordered),
        "seconds": round(seconds, 2),
        "per_second": round(len(ordered) / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "errors_5xx": statuses["5xx"],
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max_ms": round(ordered[-1], 1),
        "peak_rss_mb": round(_resources()["peak_rss_kb"] / 1024, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    soak, conc = report["soak"], report["concurrency"]
    warm, end = soak["warm"], soak["end"]
    return "\n".join(
        [
            f"Model: {report['model']}; {report['machine']['cpus']} CPUs; "
            f"{'PASSED' if report['passed'] else 'FAILED'}.",
            "",
            "| soak | value |",
            "|---|---|",
            f"| invocations (one process) | {soak['invocations']:,} in {soak['seconds']} s "
            f"({soak['per_second']}/s) |",
            f"| answers | {', '.join(f'{k}: {v:,}' for k, v in soak['statuses'].items())} |",
            f"| RSS after warm-up → end | {warm['rss_kb'] / 1024:.1f} → "
            f"{end['rss_kb'] / 1024:.1f} MB ({soak['rss_growth']:+.1%}) |",
            f"| open fds after warm-up → end | {warm['fds']} → {end['fds']} |",
            f"| threads after warm-up → end | {warm['threads']} → {end['threads']} |",
            "",
            f"| concurrency: {conc['clients']} clients through a local HTTP front | value |",
            "|---|---|",
            f"| requests | {conc['requests']:,} in {conc['seconds']} s ({conc['per_second']}/s); "
            f"{', '.join(f'{k}: {v:,}' for k, v in conc['statuses'].items())} |",
            f"| latency p50 / p99 / max | {conc['p50_ms']} / {conc['p99_ms']} / "
            f"{conc['max_ms']} ms |",
            f"| peak RSS (VmHWM) | {conc['peak_rss_mb']} MB |",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
