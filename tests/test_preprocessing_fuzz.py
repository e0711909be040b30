"""Fuzzing the decoder: whatever bytes arrive, the answer is an image or an ImageError.

Random bytes, and real images of every format with bytes flipped, cut or spliced:
Pillow may fail in many ways inside, but the contract lets only ``ImageError`` out
(each maps to a 4xx in the service), and decoding stays bounded by the pixel cap.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lambda_function import preprocessing as pp
from tests.images import animated_gif, encode, noise, with_orientation

SEEDS = [
    encode(noise("RGB", size=(64, 48)), "JPEG"),
    encode(noise("RGBA", size=(64, 48)), "PNG"),
    encode(noise("RGB", size=(64, 48)), "WEBP"),
    encode(noise("I;16", size=(64, 48)), "PNG"),
    encode(noise("CMYK", size=(64, 48)), "JPEG"),
    with_orientation(noise("RGB", size=(64, 48)), 6, fmt="JPEG"),
    animated_gif(frames=2),
]


def decodes_or_says_why(data: bytes) -> None:
    try:
        pixels = pp.load_pixels(data, 71, max_pixels=4_000_000)
    except pp.ImageError as exc:
        assert exc.code in {"empty_image", "unsupported_image", "image_too_large", "corrupt_image"}
        assert str(exc)
    else:
        assert pixels.shape == (71, 71, 3)


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
