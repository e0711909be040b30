"""Behaviour of the preprocessing contract on its own: corrections, shapes and errors."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from lambda_function import preprocessing as pp
from lambda_function.preprocessing import UPRIGHT
from tests.images import animated_gif, encode, noise, png_claiming, with_orientation


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = noise("RGB", seed=3)
    decoded = pp.decode_image(with_orientation(upright, orientation))
    assert np.array_equal(np.asarray(decoded), np.asarray(upright))


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_agrees_with_pillows_exif_transpose(orientation: int) -> None:
    data = with_orientation(noise("RGB", seed=4), orientation, fmt="JPEG")
    pillow = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(pp.decode_image(data)), np.asarray(pillow))


def test_unreadable_exif_leaves_the_image_as_stored() -> None:
    image = noise("RGB")
    data = bytearray(encode(image, "PNG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"))
    assert np.array_equal(np.asarray(pp.decode_image(bytes(data))), np.asarray(image))


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    upright = noise("RGB", size=(300, 200))
    decoded = pp.decode_image(with_orientation(upright, 6, fmt="JPEG"))
    assert decoded.size == (300, 200)


def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour() -> None:
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (10, 20, 30, 0)  # fully transparent: its colour must not show
    pixels[0, 1] = (10, 20, 30, 255)  # opaque
    pixels[1, :] = (0, 0, 0, 128)  # half-transparent black: mid grey
    decoded = np.asarray(pp.decode_image(encode(Image.fromarray(pixels), "PNG")))
    assert decoded[0, 0].tolist() == [255, 255, 255]
    assert decoded[0, 1].tolist() == [10, 20, 30]
    assert all(120 <= value <= 135 for value in decoded[1, 0])


def test_palette_transparency_becomes_white() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0] * 2 + [0] * 762)
    image.info["transparency"] = 1
    decoded = np.asarray(pp.decode_image(encode(image, "PNG")))
    assert (decoded == 255).all()


def test_sixteen_bit_greyscale_keeps_its_tones() -> None:
    ramp = np.linspace(0, 65535, 256 * 4, dtype=np.uint16).reshape(4, 256)
    decoded = np.asarray(pp.decode_image(encode(Image.fromarray(ramp), "PNG")))
    assert decoded[..., 0].min() == 0 and decoded[..., 0].max() == 255
    assert 120 <= decoded.mean() <= 135  # Pillow's own convert("RGB") gives ~254: white


def test_animated_gif_uses_its_first_frame() -> None:
    first = Image.open(io.BytesIO(animated_gif())).convert("RGB")
    assert np.array_equal(np.asarray(pp.decode_image(animated_gif())), np.asarray(first))


@pytest.mark.parametrize("size", [71, 150, 299])
def test_preprocess_returns_one_scaled_float32_batch(size: int) -> None:
    x = pp.preprocess(encode(noise("RGB"), "PNG"), size)
    assert x.shape == (1, size, size, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_scale_maps_pixel_range_to_minus_one_one() -> None:
    assert pp.scale(np.array([0, 127.5, 255])).tolist() == [-1.0, 0.0, 1.0]


def test_batch_stacks_single_images() -> None:
    images = [encode(noise("RGB", seed=i), "JPEG") for i in range(3)]
    batch = pp.preprocess_batch(images, 150)
    assert batch.shape == (3, 150, 150, 3)
    assert np.array_equal(batch[1], pp.preprocess(images[1], 150)[0])


def test_empty_input_is_rejected() -> None:
    with pytest.raises(pp.EmptyImageError, match="empty input"):
        pp.decode_image(b"")


def test_bytes_that_are_not_an_image_are_rejected() -> None:
    with pytest.raises(pp.UnsupportedImageError, match=r"Received 15 bytes .*'<html>"):
        pp.decode_image(b"<html>hi</html>")


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "PPM", "TGA"])
def test_formats_outside_the_allow_list_are_named(fmt: str) -> None:
    with pytest.raises(pp.UnsupportedImageError, match=f"a {fmt} image, which is not supported"):
        pp.decode_image(encode(noise("RGB", size=(32, 32)), fmt))


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(pp.ImageError, match="type str"):
        pp.decode_image("photo.jpg")  # type: ignore[arg-type]


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 5_000), (1, 50_000_000)])
def test_images_over_the_pixel_cap_are_rejected_before_decoding(width: int, height: int) -> None:
    with pytest.raises(pp.ImageTooLargeError, match="Expected at most 40,000,000 pixels"):
        pp.decode_image(png_claiming(width, height, "L"))


def test_pixel_cap_is_configurable() -> None:
    with pytest.raises(pp.ImageTooLargeError, match="100x100"):
        pp.decode_image(encode(noise("RGB", size=(100, 100)), "PNG"), max_pixels=5_000)


def test_truncated_image_is_corrupt() -> None:
    data = encode(noise("RGB"), "JPEG")
    with pytest.raises(pp.CorruptImageError, match="Expected a complete JPEG image"):
        pp.decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("size", [0, -1, 5000, 150.0, "150", True])
def test_absurd_target_sizes_are_rejected(size: object) -> None:
    with pytest.raises(ValueError, match=f"Received: size={size!r}"):
        pp.preprocess(encode(noise("RGB"), "PNG"), size)  # type: ignore[arg-type]


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        pp.preprocess_batch([], 150)


def test_errors_carry_a_code_for_the_service() -> None:
    codes = {cls.code for cls in pp.ImageError.__subclasses__()}
    assert codes == {
        "empty_image", "unsupported_image", "image_too_large", "corrupt_image", "upstream_timeout"
    }  # fmt: skip


def test_the_pixel_cap_admits_exactly_its_value_and_refuses_one_more() -> None:
    ok = encode(Image.new("L", (10, 10), 7), "PNG")
    over = encode(Image.new("L", (101, 1), 7), "PNG")
    assert pp.preprocess(ok, 8, max_pixels=100).shape == (1, 8, 8, 3)
    with pytest.raises(pp.ImageTooLargeError, match="at most 100 pixels"):
        pp.preprocess(over, 8, max_pixels=100)


@pytest.mark.parametrize("size", [1, 2048])
def test_the_target_size_limits_are_inclusive(size: int) -> None:
    assert pp.load_pixels(encode(Image.new("RGB", (3, 2)), "PNG"), size).shape == (size, size, 3)


def test_an_image_already_at_the_input_size_is_not_resampled() -> None:
    image = noise("RGB", size=(32, 32))
    assert pp.resize(image, 32) is image
    x = pp.preprocess(encode(image, "PNG"), 32)
    np.testing.assert_array_equal(x[0], pp.scale(np.asarray(image)))


def test_sixteen_bit_values_map_to_the_rounded_eight_bit_tone() -> None:
    values = np.array([[0, 128, 129, 257, 32767, 32768, 65407, 65535]], dtype=np.uint16)
    eight = np.asarray(pp.to_rgb(Image.fromarray(values)))[..., 0]
    np.testing.assert_array_equal(eight[0], np.rint(values[0] / 65535 * 255).astype(np.uint8))
    wide = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I")
    assert np.asarray(pp.to_rgb(wide))[0, :, 0].tolist() == [0, 255]  # clipped, then scaled


def test_an_image_outside_the_one_allowed_format_is_refused_by_name() -> None:
    with pytest.raises(pp.ImageError, match=r"Expected a JPEG image\. Received"):
        pp.decode_image(encode(Image.new("RGB", (8, 8)), "PNG"), formats=("JPEG",))


def test_a_palette_with_a_transparent_index_is_a_transparency_correction() -> None:
    image = Image.new("P", (8, 8))
    image.info["transparency"] = 0
    assert pp.corrections(image) == {"transparency"}


def test_exif_that_pillow_only_warns_about_still_decodes() -> None:
    description = struct.pack(">HHII", 0x010E, 2, 100, 0x100)  # 100 bytes past the end
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01" + description + b"\x00" * 4
    data = encode(Image.new("RGB", (8, 8), "red"), "PNG", exif=exif)

    with pytest.warns(UserWarning, match="Tag data larger than file"):
        image = pp.decode_image(data)

    assert image.size == (8, 8)
