"""Two file rules every stage shares: a file's sha256, and "write beside, then rename".

A reader (the Lambda loading its model, a training run reading a cache, a deploy copying
``serve.onnx``) must never see half a file: everything is written under a temporary name
in the target's own folder and renamed into place, which is atomic on one file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, streamed."""
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target``, removed on exit unless renamed to ``target``.

    The caller decides: ``staged_path.replace(target)`` once what it wrote is good.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    path = Path(name)
    path.chmod(0o644)  # mkstemp's 0600 would hide a model from the Lambda's user
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def write_atomic(target: Path, write: Callable[[Path], object]) -> Path:
    """``write(temporary path)``, then rename it to ``target``; on error nothing is left."""
    with staged(target) as path:
        write(path)
        path.replace(target)
    return target


def write_text_atomic(target: Path, text: str) -> Path:
    """``target.write_text(text)`` (UTF-8), atomically."""
    return write_atomic(target, lambda path: path.write_text(text, encoding="utf-8"))
