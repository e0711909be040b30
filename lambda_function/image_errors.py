"""Why image bytes cannot become model input: one ``ImageError`` subclass per answer."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot become model input; ``code`` names the reason for callers."""

    code = "invalid_image"


class EmptyImageError(ImageError):
    code = "empty_image"


class UnsupportedImageError(ImageError):
    code = "unsupported_image"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class OutOfTimeError(ImageError):
    """The time left to the invocation cannot cover this decode (the service answers 504)."""

    code = "upstream_timeout"
