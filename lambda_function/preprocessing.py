"""The pixels the network sees: image bytes in, Xception input out.

This is the one preprocessing contract of the project. Training, conversion and the
Lambda function all call it, so they all see the same pixels. It reproduces, in numpy
and Pillow only, the reference pipeline the model was designed for::

    img = keras.utils.load_img(path, target_size=(size, size))   # RGB, NEAREST resize
    x = keras.applications.xception.preprocess_input(np.array(img, dtype="float32"))

and is proved equal to it in ``tests/test_preprocessing_parity.py``. Where it
deliberately differs from ``load_img`` it is because ``load_img`` gets a real photo
wrong, and the difference is tested on its own:

* EXIF orientation is applied (phone photos are often stored sideways);
* transparency is composited onto white (``load_img`` shows whatever colour hides
  under transparent pixels, often black);
* 16-bit greyscale is scaled to 8 bits (``load_img`` clips it, so it turns white).

The serving path (:func:`prepare`) resizes *before* converting to RGB: every conversion
here is per pixel and NEAREST only picks pixels, so the result is the same pixels for a
fraction of the memory (a 40 MP image is never held as RGB). Before decoding, the file is
checked against :mod:`lambda_function.decode_limits` (decode work, scans, time left), and
decodes run under a memory-sized gate.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from PIL import Image

from lambda_function import decode_limits
from lambda_function.image_errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    OutOfTimeError,
    UnsupportedImageError,
)

__all__ = [
    "CorruptImageError",
    "EmptyImageError",
    "ImageError",
    "ImageTooLargeError",
    "OutOfTimeError",
    "UnsupportedImageError",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""Formats we decode. Pillow's JPEG decoder also opens MPO, the multi-picture JPEG
that many phone cameras write (it reports ``format == "MPO"``)."""

MAX_PIXELS = 40_000_000
"""Largest image accepted (width x height): a 50 MP photo is refused, 40 MP is not."""

MIN_TARGET_SIZE, MAX_TARGET_SIZE = 1, 2048
WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
EXIF_ORIENTATION = 0x0112
UPRIGHT = {  # EXIF orientation -> the transpose that shows the stored pixels upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

ImageBytes = bytes | bytearray | memoryview
T = TypeVar("T")


def decode_image(
    data: ImageBytes,
    *,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = ALLOWED_FORMATS,
    deadline: float | None = None,
) -> Image.Image:
    """Decode ``data`` into an upright RGB image (first frame of an animation), full size."""
    image = _open(data, max_pixels=max_pixels, formats=formats)
    decode_limits.check(image, data, deadline)
    with decode_limits.gate(max_pixels).slot(deadline):
        image = _decoded(image, data)
        return _guarded(lambda: to_rgb(image), image.format, data)


def prepare(
    data: ImageBytes, size: int, *, max_pixels: int = MAX_PIXELS, deadline: float | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`preprocess`, plus the upright ``(width, height)`` the image decoded to."""
    small, decoded_size = _small_rgb(data, size, max_pixels=max_pixels, deadline=deadline)
    return scale(np.asarray(small, dtype=np.uint8))[np.newaxis], decoded_size


def _small_rgb(
    data: ImageBytes, size: int, *, max_pixels: int, deadline: float | None
) -> tuple[Image.Image, tuple[int, int]]:
    """``size`` x ``size`` RGB, resized in the file's own mode (the least memory), then
    converted: the same pixels as converting first, as every conversion is per pixel."""
    _check_target_size(size)
    image = _open(data, max_pixels=max_pixels, formats=ALLOWED_FORMATS)
    decode_limits.check(image, data, deadline)
    with decode_limits.gate(max_pixels).slot(deadline):
        image = _decoded(image, data)
        small = _guarded(lambda: to_rgb(resize(image, size)), image.format, data)
        return small, image.size


def _decoded(image: Image.Image, data: ImageBytes) -> Image.Image:
    """Load the pixels and stand them upright; any failure inside Pillow is the file's."""
    fmt = image.format
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
        _guarded(image.load, fmt, data)
        turned = _guarded(lambda: upright(image), fmt, data)
    if turned is not image:
        image.close()  # the stored orientation's pixels are no longer needed
    turned.format = fmt
    return turned


def _guarded(step: Callable[[], T], fmt: str | None, data: ImageBytes) -> T:
    """``step()``; Pillow's plugins raise many kinds of errors on a hostile file, and each
    is the file's fault (a 4xx), not ours."""
    try:
        return step()
    except (ImageError, MemoryError):
        raise
    except Exception as exc:  # IndexError, struct.error, ...: a bad file
        raise CorruptImageError(
            f"Expected a complete {fmt} image; decoding {len(data)} bytes failed."
        ) from exc


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return image
    method = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, WHITE)
        image = Image.alpha_composite(background, image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise UnsupportedImageError(
            f"Expected an image mode convertible to RGB; received mode {image.mode!r}"
        ) from exc


def corrections(image: Image.Image) -> set[str]:
    """Which deliberate corrections of ``load_img`` :func:`decode_image` applies to ``image``.

    Among ``"orientation"`` (an EXIF orientation it transposes), ``"transparency"``
    (composited onto white) and ``"sixteen_bit"`` (scaled, not clipped). ``image`` is one
    opened by Pillow and not yet converted. Conversion uses this to tell a deliberate pixel
    difference from a bug, so it must name exactly what :func:`upright` and :func:`to_rgb` do.
    """
    found = set()
    if upright(image) is not image:
        found.add("orientation")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        found.add("transparency")
    if image.mode in _SIXTEEN_BIT_MODES:
        found.add("sixteen_bit")
    return found


def resize(image: Image.Image, size: int) -> Image.Image:
    """Resize to ``size`` x ``size`` with NEAREST, exactly as ``load_img(target_size=)``."""
    _check_target_size(size)
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.NEAREST)


def scale(pixels: np.ndarray) -> np.ndarray:
    """Xception's ``preprocess_input``: map [0, 255] to [-1, 1] in float32."""
    x = np.array(pixels, dtype=np.float32)
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


def pixels(image: Image.Image, size: int) -> np.ndarray:
    """A decoded RGB image to uint8 pixels of shape ``(size, size, 3)``."""
    return np.asarray(resize(image, size), dtype=np.uint8)


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """A decoded RGB image to model input: float32 ``(1, size, size, 3)`` in [-1, 1]."""
    return scale(pixels(image, size))[np.newaxis]


def load_pixels(data: ImageBytes, size: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode and resize ``data`` into uint8 pixels of shape ``(size, size, 3)``."""
    small, _ = _small_rgb(data, size, max_pixels=max_pixels, deadline=None)
    return np.asarray(small, dtype=np.uint8)


def preprocess(
    data: ImageBytes, size: int, *, max_pixels: int = MAX_PIXELS, deadline: float | None = None
) -> np.ndarray:
    """Image bytes to model input: float32 of shape ``(1, size, size, 3)`` in [-1, 1]."""
    return prepare(data, size, max_pixels=max_pixels, deadline=deadline)[0]


def preprocess_batch(
    images: Sequence[ImageBytes], size: int, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Several images to one float32 batch of shape ``(N, size, size, 3)``."""
    _check_target_size(size)
    if not images:
        raise ValueError("Expected at least one image. Received an empty sequence.")
    pixels = np.stack([load_pixels(data, size, max_pixels=max_pixels) for data in images])
    return scale(pixels)


def _open(data: ImageBytes, *, max_pixels: int, formats: Sequence[str]) -> Image.Image:
    """Identify ``data`` among ``formats`` and check its size, without decoding pixels."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"Expected image bytes. Received an object of type {type(data).__name__}")
    if len(data) == 0:
        raise EmptyImageError("Expected image bytes. Received an empty input (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"Expected at most {max_pixels:,} pixels.") from exc
    except Exception as exc:  # whatever a plugin raises, we cannot read it
        raise UnsupportedImageError(
            f"Expected a {_format_list(formats)} image. Received {len(data)} bytes "
            f"of {_describe(data)}"
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"Expected at most {max_pixels:,} pixels. Received a {width}x{height} "
            f"{image.format} image ({width * height:,} pixels)"
        )
    if width < 1 or height < 1:
        raise CorruptImageError(f"Expected a non-empty image. Received {width}x{height}")
    return image


_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
"""round(v * 255 / 65535) for every 16-bit value: one table lookup per pixel, no wide ints."""


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit greyscale to 8 bits (Pillow's own conversion clips it to white)."""
    values = np.asarray(image)
    if values.dtype.kind != "u" or values.dtype.itemsize != 2:  # mode "I": 32-bit signed
        values = np.clip(values, 0, 65535).astype(np.uint16)
    return Image.fromarray(_SIXTEEN_TO_EIGHT[values])


def _describe(data: ImageBytes) -> str:
    """Name what ``data`` is, for an error message: a format outside the list, or not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kind = Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - any failure here only means "unrecognised"
        kind = None
    if kind:
        return f"a {kind} image, which is not supported"
    return f"an unrecognised format (starting {bytes(data[:8])!r})"


def _format_list(formats: Sequence[str]) -> str:
    names = list(formats)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _check_target_size(size: int) -> None:
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not (MIN_TARGET_SIZE <= size <= MAX_TARGET_SIZE)
    ):
        raise ValueError(
            f"Expected a target size between {MIN_TARGET_SIZE} and {MAX_TARGET_SIZE} pixels. "
            f"Received: size={size!r}"
        )
