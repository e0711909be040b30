"""uv.lock, the one lock of every extra and group, agrees with pyproject.toml, and the image's
requirements/serve.txt is exactly its export of the `serve` extra (`make lock` writes both)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "requirements" / "serve.txt"


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    """The dev group's uv, offline: the lock alone must answer."""
    command = [str(Path(sys.executable).parent / "uv"), *args, "--offline", "--quiet"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def requirements(text: str) -> str:
    """Without the header comment, which names the command that wrote the file."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    done = uv("lock", "--check")
    assert done.returncode == 0, done.stderr


def test_the_serve_requirements_are_the_locks_export_of_the_serve_extra() -> None:
    done = uv("export", "--locked", "--extra", "serve", "--no-dev", "--no-emit-project")
    assert done.returncode == 0, done.stderr
    assert requirements(done.stdout) == requirements(SERVE.read_text())
