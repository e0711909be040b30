"""The two ways a conversion stops, each with its exit code."""

from __future__ import annotations


class ConvertError(Exception):
    """The input cannot be converted: a missing or malformed file, a model of the wrong
    shape, an output path that cannot be written. Exit code 2."""

    exit_code = 2


class VerificationError(Exception):
    """The converted model does not answer like the Keras model (or an int8 variant
    loses too much accuracy). Exit code 1; nothing is left at the output path."""

    exit_code = 1
