"""How many photos an upload invocation may hold at once, and when it must stop.

**Memory.** Photos are read, decoded and classified in chunks, and each chunk's rows are
written before the next is read, so an event or backfill batch of any length runs in the
memory of one chunk. A chunk is filled while its photos fit beside the process
(:data:`~lambda_function.decode_limits.BASE_PROCESS_MB`) and the decodes the decode gate
lets run at once (:func:`~lambda_function.decode_limits.decode_slots`, from the same
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``): each photo holds its bytes (its listed size, else the
byte cap) while the chunk decodes, then its model input and the network's activations for it
(:data:`ACTIVATION_BYTES_PER_INPUT_PIXEL`) while the chunk is classified. A function whose
memory cannot hold a single photo at the byte cap refuses the event (retryably, so it waits
in the queue until MemorySize or ``MAX_IMAGE_BYTES`` is fixed).

**Time.** :class:`Deadline` is the invocation's deadline less a reserve. The pace (seconds
to decode and classify a photo: a prior for the first chunk, then measured) decides how many
photos a chunk may still take, how long its reads are waited for (no later than leaves the
photos that arrived their inference), and how many of those are classified. Whatever did not
finish is raised as transient after the finished rows are written; writes may use the
reserve, down to :data:`WRITE_MARGIN_S` before Lambda's own timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lambda_function.decode_limits import (
    BASE_PROCESS_MB,
    PEAK_BYTES_PER_PIXEL,
    cpu_share,
    decode_slots,
)
from lambda_function.failures import TransientError
from lambda_function.photos import Photo

ACTIVATION_BYTES_PER_INPUT_PIXEL = 1024
"""Resident memory per model-input pixel of one photo in an inference batch (its input, the
activations, onnxruntime's arena, which grows by doubling, so the cost per photo rises with
the batch): the fp32 Xception at 299 px took up to ~82 MB a photo (a chunk of 29, 2.39 GB
above the loaded process), the served int8 one ~27 MB (docs/results/upload-bounds-*.md,
``python -m bench.upload_bounds``); 1,024 B/px (~92 MB at 299 px) covers both."""

MAX_CHUNK = 64
"""Photos per inference at most, whatever the memory: beyond this batching gains nothing."""

UNKNOWN_MEMORY_CHUNK = 16
"""Photos per chunk outside Lambda (no ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``)."""

SECONDS_PER_PHOTO_AT_299 = 0.5
"""Prior for one photo's decode and inference on one full vCPU (Xception-299: ~17 GFLOP),
until the invocation's first chunk has measured its own."""

CLASSIFY_MARGIN_S = 0.5
"""Kept beyond the pace for a chunk's decoding and inference (the pace is an estimate)."""

READ_ALLOWANCE_S = 1.0
"""Time a chunk leaves its reads when it is cut to the photos the pace says still fit."""

WRITE_MARGIN_S = 1.0
"""Kept after the last write for the summary line and the answer to Lambda."""


def photo_cost(photo: Photo, max_image_bytes: int, image_size: int) -> tuple[int, int]:
    """(bytes held while decoding, bytes held while classifying) for one photo of a chunk."""
    data = photo.size if photo.size is not None and photo.size <= max_image_bytes else None
    held = max_image_bytes if data is None else data
    model_input = image_size * image_size * 3 * 4
    return held + model_input, held + image_size * image_size * ACTIVATION_BYTES_PER_INPUT_PIXEL


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes a chunk may hold while decoding and while classifying; ``None``: not in Lambda."""

    decoding: int | None
    classifying: int | None

    @classmethod
    def of(cls, memory_mb: int | None, max_pixels: int) -> MemoryBudget:
        if memory_mb is None:
            return cls(None, None)
        free = (memory_mb - BASE_PROCESS_MB) * 2**20
        decodes = decode_slots(memory_mb, max_pixels) * max_pixels * PEAK_BYTES_PER_PIXEL
        return cls(max(0, free - decodes), max(0, free))

    def check_one_fits(self, max_image_bytes: int, image_size: int, memory_mb: int) -> None:
        """Refuse the invocation when not even one photo at the byte cap fits."""
        if self.decoding is None or self.classifying is None:
            return
        worst = Photo(bucket="", key="", etag="", size=None)
        decoding, classifying = photo_cost(worst, max_image_bytes, image_size)
        if decoding > self.decoding or classifying > self.classifying:
            need = BASE_PROCESS_MB + (max(decoding, classifying) >> 20) + 1
            raise TransientError(
                f"Expected a MemorySize that holds one photo of MAX_IMAGE_BYTES="
                f"{max_image_bytes:,} beside the decodes (about {need:,} MB or more). "
                f"Received: {memory_mb} MB. Raise MemorySize or lower MAX_IMAGE_BYTES; "
                "the event waits in the on-failure queue."
            )


def chunks(
    photos: Sequence[Photo], budget: MemoryBudget, max_image_bytes: int, image_size: int
) -> Iterator[list[Photo]]:
    """``photos`` in order, in chunks that each fit ``budget`` (at most :data:`MAX_CHUNK`)."""
    chunk: list[Photo] = []
    decoding = classifying = 0
    for photo in photos:
        cost_decoding, cost_classifying = photo_cost(photo, max_image_bytes, image_size)
        full = len(chunk) >= (MAX_CHUNK if budget.decoding is not None else UNKNOWN_MEMORY_CHUNK)
        if chunk and budget.decoding is not None and budget.classifying is not None:
            full = full or decoding + cost_decoding > budget.decoding
            full = full or classifying + cost_classifying > budget.classifying
        if full:
            yield chunk
            chunk, decoding, classifying = [], 0, 0
        chunk.append(photo)
        decoding, classifying = decoding + cost_decoding, classifying + cost_classifying
    if chunk:
        yield chunk


@dataclass
class Deadline:
    """When work must stop (the invocation's end less ``reserve_s``), and the pace so far."""

    work_ends: float
    writes_end: float
    seconds_per_photo: float

    @classmethod
    def of(
        cls, remaining_s: float, reserve_s: float, image_size: int, memory_mb: int | None
    ) -> Deadline:
        now = time.monotonic()
        prior = SECONDS_PER_PHOTO_AT_299 * (image_size / 299) ** 2 / cpu_share(memory_mb)
        return cls(now + remaining_s - reserve_s, now + remaining_s - WRITE_MARGIN_S, prior)

    def left(self) -> float:
        """Seconds until work must stop (never negative)."""
        return max(0.0, self.work_ends - time.monotonic())

    def write_left(self) -> float:
        return max(0.0, self.writes_end - time.monotonic())

    def photos_that_fit(self, reads_pending: bool = True) -> int:
        """Photos whose decode and inference (and, while ``reads_pending``, a read) can still
        end before the deadline."""
        usable = self.left() - CLASSIFY_MARGIN_S - (READ_ALLOWANCE_S if reads_pending else 0)
        return max(0, int(usable / self.seconds_per_photo))

    def read_wait(self, arrived: int) -> float:
        """How long reads may still be waited for, once ``arrived`` photos are in: the time
        left less their decoding and inference (at least one photo's)."""
        return self.left() - self.seconds_per_photo * max(1, arrived) - 2 * CLASSIFY_MARGIN_S

    def measured(self, photos: int, seconds: float) -> None:
        """Learn the pace from ``photos`` decoded and classified in ``seconds``."""
        if photos:
            self.seconds_per_photo = max(seconds / photos, 1e-4)
