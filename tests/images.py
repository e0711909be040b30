"""Synthetic images of every Pillow mode the service must decode, as encoded bytes.

Each case is random noise of an odd size (so resizing matters) saved in a format that
keeps its mode. ``reference`` is what Keras' ``load_img`` should be given to see the
image the way the service does: the same bytes, except where the service deliberately
corrects ``load_img`` (transparency, 16-bit, EXIF orientation); there it is the
corrected image, built here from the definition of the correction.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lambda_function.preprocessing import EXIF_ORIENTATION, UPRIGHT

WIDTH, HEIGHT = 203, 157
# The inverse of the service's EXIF mapping (itself checked against Pillow's
# exif_transpose in test_preprocessing.py), to store an upright picture under an orientation.
STORED = {
    **{k: v for k, v in UPRIGHT.items() if k not in (6, 8)},
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Case:
    """An encoded test image and the bytes ``load_img`` must see to agree with us."""

    name: str
    data: bytes
    reference: bytes


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_claiming(width: int, height: int, mode: str = "RGB") -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height``: a decompression bomb's
    shape, a few dozen bytes long."""
    data = encode(Image.new(mode, (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def noise(mode: str, size: tuple[int, int] = (WIDTH, HEIGHT), seed: int = 0) -> Image.Image:
    """Random pixels in ``mode``; RGBA/LA alpha spans fully transparent to opaque."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        return Image.fromarray(values)  # uint16 -> I;16
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "CMYK": 4}[mode]
    values = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        values[: height // 3, :, -1] = 0  # a fully transparent band
        values[-height // 3 :, :, -1] = 255  # and a fully opaque one
    return Image.fromarray(values.squeeze(-1) if bands == 1 else values, mode=mode)


def on_white(image: Image.Image) -> Image.Image:
    """The service's definition of flattening transparency: composite onto white."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def sixteen_to_eight(image: Image.Image) -> Image.Image:
    """The service's definition of 16-bit to 8-bit: round(v * 255 / 65535)."""
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.rint(values * 255 / 65535).astype(np.uint8), mode="L")


def with_orientation(upright: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    """Store ``upright`` rotated/flipped, tagged so that a viewer shows it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(upright.transpose(STORED[orientation]), fmt, exif=exif.tobytes())


def palette_with_transparency() -> Image.Image:
    image = noise("RGB").quantize(colors=64)
    image.info["transparency"] = 5
    return image


def animated_gif(frames: int = 3) -> bytes:
    images = [noise("RGB", seed=i).quantize(colors=32) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=50)


def mpo() -> bytes:
    first, second = noise("RGB", seed=1), noise("RGB", seed=2)
    return encode(first, "MPO", save_all=True, append_images=[second], quality=95)


def _same(make: Callable[[], bytes]) -> Callable[[str], Case]:
    def build(name: str) -> Case:
        data = make()
        return Case(name, data, data)

    return build


def cases() -> list[Case]:
    """Every mode, format and correction the parity tests cover."""
    rgba, la, pal = noise("RGBA"), noise("LA"), palette_with_transparency()
    sixteen = noise("I;16")
    upright = noise("RGB", seed=7)
    built = [
        _same(lambda: encode(noise("RGB"), "JPEG", quality=90))("RGB JPEG"),
        _same(lambda: encode(noise("RGB"), "PNG"))("RGB PNG"),
        _same(lambda: encode(noise("RGB"), "WEBP", quality=90))("RGB WebP"),
        _same(lambda: encode(noise("L"), "PNG"))("L PNG"),
        _same(lambda: encode(noise("L").convert("1"), "PNG"))("1 PNG"),
        _same(lambda: encode(noise("RGB").quantize(colors=64), "PNG"))("P PNG"),
        _same(lambda: encode(noise("CMYK"), "JPEG", quality=90))("CMYK JPEG"),
        _same(animated_gif)("P GIF animated"),
        _same(mpo)("MPO (phone JPEG)"),
        _same(lambda: encode(noise("RGB", size=(40, 30)), "PNG"))("RGB PNG upscaled"),
        _same(lambda: encode(noise("RGB", size=(150, 150)), "PNG"))("RGB PNG 150x150"),
        Case("RGBA PNG", encode(rgba, "PNG"), encode(on_white(rgba), "PNG")),
        Case("RGBA WebP", encode(rgba, "WEBP", lossless=True), encode(on_white(rgba), "PNG")),
        Case("LA PNG", encode(la, "PNG"), encode(on_white(la), "PNG")),
        Case("P PNG transparent", encode(pal, "PNG"), encode(on_white(pal), "PNG")),
        Case("I;16 PNG", encode(sixteen, "PNG"), encode(sixteen_to_eight(sixteen), "PNG")),
    ]
    for orientation in sorted(UPRIGHT):
        built.append(
            Case(
                f"EXIF orientation {orientation}",
                with_orientation(upright, orientation),
                encode(upright, "PNG"),
            )
        )
    return built
