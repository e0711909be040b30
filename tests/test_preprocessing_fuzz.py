"""Fuzzing the decoder: whatever bytes arrive, the answer is an image or an ImageError.

Random bytes, and real images of every format (progressive JPEG and interlaced PNG too)
with bytes flipped, cut or spliced, and JPEG scans repeated: Pillow may fail in many ways
inside, but the contract lets only ``ImageError`` out (each maps to a 4xx in the service),
and decoding stays bounded by the pixel cap and ends by its deadline.
"""

from __future__ import annotations

import re
import time

from hypothesis import given
from hypothesis import strategies as st

from lambda_function import preprocessing as pp
from tests.hostile import interlaced_png
from tests.images import animated_gif, encode, noise, with_orientation

SEEDS = [
    encode(noise("RGB", size=(64, 48)), "JPEG"),
    encode(noise("RGBA", size=(64, 48)), "PNG"),
    encode(noise("RGB", size=(64, 48)), "WEBP"),
    encode(noise("I;16", size=(64, 48)), "PNG"),
    encode(noise("CMYK", size=(64, 48)), "JPEG"),
    with_orientation(noise("RGB", size=(64, 48)), 6, fmt="JPEG"),
    animated_gif(frames=2),
    encode(noise("RGB", size=(64, 48)), "JPEG", progressive=True),
    encode(noise("L", size=(64, 48)), "JPEG", progressive=True),
    interlaced_png(64, 48),
]
PROGRESSIVE = SEEDS[-3]
DEADLINE_S = 2.0


def decodes_or_says_why(data: bytes) -> None:
    deadline = time.monotonic() + DEADLINE_S
    try:
        x = pp.preprocess(data, 71, max_pixels=4_000_000, deadline=deadline)
    except pp.ImageError as exc:
        assert exc.code in {
            "empty_image", "unsupported_image", "image_too_large", "corrupt_image",
            "upstream_timeout",
        }  # fmt: skip
        assert str(exc)
    else:
        assert x.shape == (1, 71, 71, 3)
    assert time.monotonic() < deadline + 0.5  # the decode was refused, not run long


@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    decodes_or_says_why(data)


@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
)
def test_images_with_corrupted_bytes(seed: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    decodes_or_says_why(bytes(data))


@given(seed=st.sampled_from(SEEDS), cut=st.floats(0.0, 1.0), junk=st.binary(max_size=64))
def test_truncated_images_with_trailing_junk(seed: bytes, cut: float, junk: bytes) -> None:
    decodes_or_says_why(seed[: int(len(seed) * cut)] + junk)


@given(
    repeat=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 400)), max_size=4),
    size=st.tuples(st.integers(1, 8000), st.integers(1, 8000)),
)
def test_progressive_jpegs_with_repeated_scans_and_forged_frames(
    repeat: list[tuple[int, int]], size: tuple[int, int]
) -> None:
    """The attack of issue 12: scans repeated many times, over a frame forged larger."""
    scans = [m.start() for m in re.finditer(b"\xff\xda", PROGRESSIVE)]
    ends = [*scans[1:], PROGRESSIVE.rindex(b"\xff\xd9")]
    data = bytearray(PROGRESSIVE[: ends[-1]])
    for index, times in repeat:
        start, end = scans[index % len(scans)], ends[index % len(scans)]
        data += PROGRESSIVE[start:end] * times
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = size[1].to_bytes(2, "big") + size[0].to_bytes(2, "big")
    decodes_or_says_why(bytes(data) + b"\xff\xd9")


@given(seed=st.integers(0, 2**16), width=st.integers(1, 40), height=st.integers(1, 40))
def test_interlaced_pngs_of_any_size(seed: int, width: int, height: int) -> None:
    data = bytearray(interlaced_png(width, height, seed))
    if seed % 3 == 0:  # and damaged
        data[seed % len(data)] ^= 0xFF
    decodes_or_says_why(bytes(data))


def test_the_seeds_decode_as_what_they_claim_to_be() -> None:
    import io

    from PIL import Image

    png = Image.open(io.BytesIO(interlaced_png(40, 30)))
    assert png.info.get("interlace") == 1 and png.size == (40, 30)
    assert Image.open(io.BytesIO(PROGRESSIVE)).info.get("progressive") == 1
    for seed in SEEDS:
        assert pp.preprocess(seed, 71).shape == (1, 71, 71, 3)
