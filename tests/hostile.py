"""Hostile files built byte by byte: nothing large is kept in git, every case is made here."""

from __future__ import annotations

import struct
import zlib

from PIL import Image

from tests.images import encode


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    color_type: int = 2,
    interlace: int = 0,
    before: list[tuple[bytes, bytes]] | None = None,
    after: list[tuple[bytes, bytes]] | None = None,
    rows: bytes | None = None,
) -> bytes:
    """A PNG with the given header, extra chunks before and after IDAT, and ``rows`` (filtered
    scanlines; default all zero, which compresses to almost nothing)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row_bytes = 1 + (width * channels * bit_depth + 7) // 8
    if rows is None:
        compressor = zlib.compressobj(9)
        zero = bytes(row_bytes)
        data = b"".join(compressor.compress(zero) for _ in range(height)) + compressor.flush()
    else:
        data = zlib.compress(rows, 9)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    chunks = [png_chunk(b"IHDR", header)]
    chunks += [png_chunk(kind, body) for kind, body in before or []]
    chunks.append(png_chunk(b"IDAT", data))
    chunks += [png_chunk(kind, body) for kind, body in after or []]
    chunks.append(png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def palette(entries: int) -> bytes:
    return bytes(range(entries)) * 3


def jpeg_with_scans(width: int, height: int, scans: int, *, progressive: bool = True) -> bytes:
    """A small JPEG whose frame claims ``width`` x ``height`` and that repeats an empty AC
    scan ``scans`` times: each one makes libjpeg walk the whole frame again."""
    base = encode(Image.new("L", (8, 8), 128), "JPEG", progressive=progressive, quality=90)
    data = bytearray(base)
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    eoi = len(data) - 2
    # One component, spectral selection 1..63, no successive approximation, no data:
    # an end-of-band run covering the frame, coded with the AC table (code 0 ... EOB).
    empty_scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x01\x3f\x00"
    extra = (empty_scan + b"\x00") * scans
    return bytes(data[:eoi]) + extra + b"\xff\xd9"


def flat_jpeg(size: tuple[int, int], *, progressive: bool = False) -> bytes:
    """A one-colour JPEG: big frames stay small files (and quick to build)."""
    return encode(Image.new("RGB", size, (200, 30, 30)), "JPEG", progressive=progressive)


def interim_then(final: bytes, interim: int = 1, status: int = 103) -> bytes:
    """A raw HTTP exchange: ``interim`` 1xx responses, then ``final`` (a full response)."""
    hint = f"HTTP/1.1 {status} Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".encode()
    return hint * interim + final


ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def interlaced_png(width: int, height: int, seed: int = 0) -> bytes:
    """An Adam7-interlaced RGB PNG of random pixels (Pillow writes no interlaced PNGs)."""
    import random

    rng = random.Random(seed)
    rows = bytearray()
    for x0, y0, dx, dy in ADAM7:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            for _ in range(pass_height):
                rows += b"\0" + rng.randbytes(pass_width * 3)
    return png(width, height, interlace=1, rows=bytes(rows))
