"""The function's settings, read once from environment variables (``template.yaml`` sets them)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lambda_function.preprocessing import MAX_PIXELS

PACKAGE_MODEL = Path(__file__).resolve().parent / "serve.onnx"
"""Where the container image bakes the served model in (see the Dockerfile)."""

SERVED_MODEL = Path("artifacts/model/serve.onnx")
"""The one model every ``python -m convert`` leaves to be served (int8 when it passed its
gate, fp32 otherwise), for local use from the repository root."""

LAMBDA_MB_PER_VCPU = 1769
"""Lambda gives a function one full vCPU per 1,769 MB of memory, whatever ``nproc`` says."""

MAX_UPLOAD_LIMIT = 4_500_000
"""Bytes whose base64 (6,000,000 characters) fills Lambda's 6 MB request payload."""

TEST_ONLY_LOOPBACK = "ALLOW_LOOPBACK_FOR_TESTS"
"""Test-only: lets the fetcher reach 127.0.0.0/8 and ::1 on any port. Never set in AWS."""


@dataclass(frozen=True)
class Config:
    """Everything tunable, with the defaults the deployed function runs with."""

    model_path: Path
    model_s3_uri: str = ""
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_batch: int = 8
    max_upload_bytes: int = 4 * 1024 * 1024
    """Cap on bytes sent in the request (base64 or raw): its base64 (5.6 MB) stays under
    Lambda's 6 MB synchronous payload limit."""
    fetch_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    max_redirects: int = 3
    allowed_ports: tuple[int, ...] = (80, 443)
    fetch_retries: int = 2
    s3_allowed_buckets: tuple[str, ...] = ()
    allow_loopback_for_tests: bool = False
    reserve_s: float = 3.0
    """Time kept back from the invocation's deadline for decoding, inference and the answer."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read the settings from ``environ`` (default ``os.environ``); say what is wrong."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        config = cls(
            model_path=Path(env.get("MODEL_PATH") or default_model_path()),
            model_s3_uri=env.get("MODEL_S3_URI", ""),
            intra_op_threads=reader.integer("ORT_INTRA_OP_THREADS", default_threads(env), 1, 64),
            inter_op_threads=reader.integer("ORT_INTER_OP_THREADS", 1, 1, 64),
            max_image_bytes=reader.integer("MAX_IMAGE_BYTES", cls.max_image_bytes, 1, 2**31),
            max_pixels=reader.integer("MAX_PIXELS", cls.max_pixels, 1, 2**31),
            max_batch=reader.integer("MAX_BATCH", cls.max_batch, 1, 64),
            max_upload_bytes=reader.integer(
                "MAX_UPLOAD_BYTES", cls.max_upload_bytes, 1, MAX_UPLOAD_LIMIT
            ),
            fetch_timeout_s=reader.number("FETCH_TIMEOUT", cls.fetch_timeout_s),
            connect_timeout_s=reader.number("FETCH_CONNECT_TIMEOUT", cls.connect_timeout_s),
            read_timeout_s=reader.number("FETCH_READ_TIMEOUT", cls.read_timeout_s),
            max_redirects=reader.integer("FETCH_MAX_REDIRECTS", cls.max_redirects, 0, 10),
            allowed_ports=reader.ports("FETCH_ALLOWED_PORTS", cls.allowed_ports),
            fetch_retries=reader.integer("FETCH_RETRIES", cls.fetch_retries, 0, 5),
            s3_allowed_buckets=reader.names("S3_ALLOWED_BUCKETS"),
            allow_loopback_for_tests=env.get(TEST_ONLY_LOOPBACK, "") == "1",
            reserve_s=reader.number("DEADLINE_RESERVE", cls.reserve_s),
        )
        return config

    @property
    def upload_cap(self) -> int:
        """Bytes a request may carry itself: the image cap, within the payload limit."""
        return min(self.max_image_bytes, self.max_upload_bytes)


def default_model_path() -> Path:
    """The model baked into the image when there is one, else the converter's served model."""
    return PACKAGE_MODEL if PACKAGE_MODEL.is_file() else SERVED_MODEL


def default_threads(env: Mapping[str, str]) -> int:
    """The CPU this function really gets: from Lambda's memory size, capped by the cores."""
    cores = os.cpu_count() or 1
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if not memory.isdigit():
        return cores
    return max(1, min(cores, math.ceil(int(memory) / LAMBDA_MB_PER_VCPU)))


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.env.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(
                f"Expected {name} to be an integer in [{low}, {high}]. Received: {raw!r}"
            )
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(name, "")
        if raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < 900:
            raise ValueError(f"Expected {name} to be seconds in (0, 900). Received: {raw!r}")
        return value

    def names(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.env.get(name, "").split(",") if part.strip())

    def ports(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        raw = self.env.get(name, "")
        if raw == "":
            return default
        try:
            ports = tuple(int(part) for part in raw.split(","))
        except ValueError:
            ports = (0,)
        if not all(1 <= port <= 65535 for port in ports):
            raise ValueError(f"Expected {name} as comma-separated ports. Received: {raw!r}")
        return ports
