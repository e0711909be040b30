"""Peak memory of the serving path for the worst inputs it accepts, against 1,024 MB.

Each case runs in a fresh process that loads the model exactly as the function does
(``handler.get_service``), warms it up, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), then answers one request whose images come from a loopback
server: one 40 MP image of each hard kind (16-bit greyscale, CMYK, palette with
transparency, RGBA, progressive 4:4:4 JPEG, baseline JPEG), and a full batch of the worst.
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` is set to the smallest MemorySize the template allows,
so the decode gate sizes itself as it would there (the CPU share is *not* emulated: times
are this machine's). Figures: ``docs/results/memory-DATE.md`` (and JSON in artifacts/bench).

    python -m bench.memory [--model artifacts/model/serve.onnx] [--memory-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.results import RESULTS, SCRATCH, publish
from lambda_function.config import SERVED_MODEL

SIZE = (7300, 5470)  # 39.9 MP: just under the 40 MP cap
CASES = ("16-bit grey PNG", "CMYK JPEG", "palette PNG, transparent", "RGBA PNG",
         "progressive 4:4:4 JPEG", "baseline 4:4:4 JPEG")  # fmt: skip


def build_inputs(directory: Path) -> dict[str, Path]:
    """The worst accepted inputs, smooth so that each stays under the 10 MiB fetch cap."""
    directory.mkdir(parents=True, exist_ok=True)
    width, height = SIZE
    ramp = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :].repeat(height, 0)
    grey = Image.fromarray(ramp.astype(np.uint8))
    rgb = Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey))
    makers = {
        "16-bit grey PNG": lambda: (Image.fromarray(ramp.astype(np.uint16) * 257), "PNG", {}),
        "CMYK JPEG": lambda: (rgb.convert("CMYK"), "JPEG", {"quality": 90}),
        "palette PNG, transparent": lambda: (_palette(rgb), "PNG", {"transparency": 3}),
        "RGBA PNG": lambda: (_with_alpha(rgb, grey), "PNG", {}),
        "progressive 4:4:4 JPEG": lambda: (
            rgb,
            "JPEG",
            {"quality": 90, "subsampling": 0, "progressive": True},
        ),
        "baseline 4:4:4 JPEG": lambda: (rgb, "JPEG", {"quality": 90, "subsampling": 0}),
    }
    paths = {}
    for name, make in makers.items():
        path = directory / (name.replace(" ", "_").replace(",", "").replace(":", "") + ".img")
        if not path.is_file():
            image, fmt, params = make()
            image.save(path, format=fmt, **params)
        paths[name] = path
    return paths


def _palette(rgb: Image.Image) -> Image.Image:
    return rgb.quantize(colors=64, method=Image.Quantize.FASTOCTREE)


def _with_alpha(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    return rgba


CHILD = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

files = [Path(p) for p in sys.argv[1:]]

class Serve(BaseHTTPRequestHandler):
    def do_GET(self):
        data = files[int(self.path.strip("/"))].read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
threading.Thread(target=server.serve_forever, daemon=True).start()
from lambda_function import handler
from lambda_function.decode_limits import gate
from lambda_function.config import Config

handler.get_service()
base_kb = status_kb("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
urls = [f"http://127.0.0.1:{server.server_address[1]}/{i}" for i in range(len(files))]
event = {"url": urls[0]} if len(urls) == 1 else {"urls": urls}

class Context:
    aws_request_id = "bench"
    def get_remaining_time_in_millis(self):
        return 25_000

started = time.monotonic()
answer = handler.lambda_handler(event, Context())
seconds = time.monotonic() - started
items = answer.get("results", [answer])
print(json.dumps({
    "base_mb": base_kb / 1024, "peak_mb": status_kb("VmHWM") / 1024, "seconds": seconds,
    "statuses": [item.get("status", 200) for item in items],
    "decode_slots": gate(Config.from_env().max_pixels).slots,
}))
"""


def measure(files: list[Path], model: Path, memory_mb: int) -> dict[str, object]:
    env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "ALLOW_LOOPBACK_FOR_TESTS": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "MAX_BATCH": str(max(8, len(files))),
        "PYTHONPATH": str(Path.cwd()),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, files)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--model", type=Path, default=SERVED_MODEL)
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    inputs = build_inputs(SCRATCH / "memory")
    rows = []
    for name in CASES:
        figures = measure([inputs[name]], args.model, args.memory_mb)
        rows.append({"input": f"{name}, {SIZE[0]}x{SIZE[1]}", "bytes": inputs[name].stat().st_size,
                     **figures})  # fmt: skip
        print(name, figures, flush=True)
    worst = inputs["progressive 4:4:4 JPEG"]
    figures = measure([worst] * args.batch, args.model, args.memory_mb)
    rows.append({"input": f"batch of {args.batch} x progressive 4:4:4 JPEG 40 MP",
                 "bytes": worst.stat().st_size * args.batch, **figures})  # fmt: skip
    print("batch", figures, flush=True)
    (SCRATCH / "memory" / "memory.json").write_text(json.dumps(rows, indent=2))
    path = publish("memory", "Peak memory per image and per batch", table(rows, args), args.results)
    print(f"wrote {path}")
    return 0


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    """The markdown the results file carries under its header."""
    lines = [
        f"Model: `{args.model}`; `AWS_LAMBDA_FUNCTION_MEMORY_SIZE={args.memory_mb}` (the",
        "smallest MemorySize template.yaml allows), so the decode gate is sized as there.",
        "Peak is the process's peak resident memory (VmHWM) from the start of the request,",
        "after the model loaded and warmed up (base). Times are this machine's, not Lambda's.",
        "",
        f"| input | bytes | status | decode slots | base MB | peak MB | peak - base MB "
        f"| headroom to {args.memory_mb} MB | seconds |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base, peak = float(row["base_mb"]), float(row["peak_mb"])  # type: ignore[arg-type]
        statuses = sorted(set(row["statuses"]))  # type: ignore[call-overload]
        seconds = float(row["seconds"])  # type: ignore[arg-type]
        lines.append(
            f"| {row['input']} | {row['bytes']:,} | {', '.join(map(str, statuses))} "
            f"| {row['decode_slots']} | {base:.0f} | {peak:.0f} | {peak - base:.0f} "
            f"| {args.memory_mb - peak:.0f} | {seconds:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
