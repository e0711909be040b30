"""What a file may ask of the decoder, checked before a single pixel is decoded.

Pillow's C decoders cannot be interrupted, so a decode must be known to fit *before* it
starts. Three bounds, each from the file's headers alone:

* **work**: an estimate of the decoder's passes over the frame, ``pixels x components x
  (1 + scans)``. A progressive JPEG makes libjpeg walk the whole frame once per scan, and a
  scan with no data costs a few bytes, so a 100 KB file can ask for minutes; scans beyond
  :data:`MAX_JPEG_SCANS` or work beyond :data:`MAX_DECODE_WORK` are refused (413).
* **bytes**: a complete JPEG carries at least one bit per 8x8 block, so more than
  :data:`MAX_JPEG_PIXELS_PER_BYTE` declared pixels per byte is a truncated (or forged) file,
  refused (422) before libjpeg invents the missing pixels.
* **time**: the estimated seconds (work x :data:`NS_PER_WORK_UNIT`, scaled by the CPU share
  Lambda gives the function's memory) must fit before the decode deadline, or the item is
  answered 504 at once, never after Lambda's own timeout.

Memory: at most :func:`decode_slots` decodes run at once, sized from the memory the function
has (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) and the worst peak one decode can reach.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from PIL import Image

from lambda_function.image_errors import CorruptImageError, ImageTooLargeError, OutOfTimeError

MAX_JPEG_SCANS = 64
"""Encoders write 1 to ~20 scans (libjpeg's progressive script: 10 for colour); 64 is generous."""

MAX_JPEG_PIXELS_PER_BYTE = 1024
"""Twice what a complete JPEG can reach (one bit per 8x8 block at best: 512 pixels a byte)."""

MAX_DECODE_WORK = 40_000_000 * 3 * 12
"""A 40 MP colour JPEG of 11 progressive scans: the heaviest legitimate decode we accept."""

NS_PER_WORK_UNIT = 2.0
"""Decode cost per unit of work on one full vCPU: measured ~0.9 ns (40 MP progressive 4:4:4
JPEG, 1.23 s), doubled as a margin. See docs/security.md."""

PEAK_BYTES_PER_PIXEL = 10
"""Worst resident memory of one decode per declared pixel: a progressive 4:4:4 JPEG keeps
its coefficients (6 B/px) and the RGBX output (4 B/px); measured 385 MB at 40 MP."""

BASE_PROCESS_MB = 400
"""Memory kept for everything but decoding: the warm process with the int8 model after a
batch of 8 (measured 201 MB; bench/memory.py), the fetched bytes of the 4 fetch workers
(up to 40 MB) and Lambda's runtime, with margin."""

LAMBDA_MB_PER_VCPU = 1769
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


def check(image: Image.Image, data: bytes | bytearray | memoryview, deadline: float | None) -> None:
    """Refuse ``image`` (opened, not decoded) when decoding it could not fit; see the module."""
    width, height = image.size
    pixels = width * height
    components = len(image.getbands())
    scans = 0
    if image.format in ("JPEG", "MPO"):
        scans = jpeg_scans(bytes(data))
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLargeError(
                f"Expected a JPEG of at most {MAX_JPEG_SCANS} scans. Received {scans}."
            )
        if pixels > MAX_JPEG_PIXELS_PER_BYTE * len(data):
            raise CorruptImageError(
                f"Expected a complete JPEG: {width}x{height} pixels cannot fit in "
                f"{len(data):,} bytes."
            )
    work = decode_work(pixels, components, scans)
    if work > MAX_DECODE_WORK:
        raise ImageTooLargeError(
            f"Expected an image that decodes in at most {MAX_DECODE_WORK:,} pixel passes. "
            f"Received a {width}x{height} {image.format} of {scans} scans ({work:,})."
        )
    if deadline is not None:
        needed = estimated_seconds(work)
        if time.monotonic() + needed > deadline:
            raise OutOfTimeError(
                f"The time left cannot cover decoding a {width}x{height} image "
                f"(~{needed:.1f} s); try again with more time or a smaller image."
            )


def decode_work(pixels: int, components: int, scans: int) -> int:
    """Passes the decoder makes over the frame: one, plus one per JPEG scan."""
    return pixels * max(1, components) * (1 + scans)


def estimated_seconds(work: int, memory_mb: int | None = None) -> float:
    """Upper estimate of a decode's wall time with the CPU share the function has."""
    return work * NS_PER_WORK_UNIT * 1e-9 / cpu_share(memory_mb)


def cpu_share(memory_mb: int | None = None) -> float:
    """Lambda's vCPUs for the function's memory (1 vCPU per 1,769 MB), at most one core's
    worth for a single decode; 1.0 outside Lambda."""
    memory = function_memory_mb() if memory_mb is None else memory_mb
    return 1.0 if memory is None else min(1.0, memory / LAMBDA_MB_PER_VCPU)


def function_memory_mb() -> int | None:
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(raw) if raw.isdigit() else None


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) the first JPEG in ``data`` has, walking its markers."""
    scans, i, end = 0, 2, len(data)
    while i + 1 < end:
        if data[i] != 0xFF:  # entropy-coded data: jump to the next marker candidate
            i = data.find(b"\xff", i)
            if i < 0:
                break
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x00 or marker in _STANDALONE:  # stuffed 0xFF, restart marker
            i += 2
        elif marker == 0xD9:  # end of image
            break
        else:
            if marker == 0xDA:
                scans += 1
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            i += 2 + max(length, 2)
    return scans


def decode_slots(memory_mb: int | None, max_pixels: int) -> int:
    """Decodes that may run at once: as many worst-case decodes as fit beside the process."""
    if memory_mb is None:
        return 4
    per_decode_mb = max_pixels * PEAK_BYTES_PER_PIXEL / 2**20
    return max(1, int((memory_mb - BASE_PROCESS_MB) // per_decode_mb))


class DecodeGate:
    """At most ``slots`` decodes at once; a decode that cannot start by its deadline is a 504."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)

    @contextlib.contextmanager
    def slot(self, deadline: float | None) -> Iterator[None]:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._semaphore.acquire(timeout=wait):
            raise OutOfTimeError("The time left ran out while other images of the request decoded.")
        try:
            yield
        finally:
            self._semaphore.release()


_gates: dict[int, DecodeGate] = {}
_gates_lock = threading.Lock()


def gate(max_pixels: int) -> DecodeGate:
    """The process's gate for decodes of up to ``max_pixels``, sized for its memory."""
    with _gates_lock:
        if max_pixels not in _gates:
            _gates[max_pixels] = DecodeGate(decode_slots(function_memory_mb(), max_pixels))
        return _gates[max_pixels]
