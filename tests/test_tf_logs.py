"""TensorFlow's C++ start-up lines are hidden on the command line, and shown on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the CLIs do: quiet, then import TensorFlow.
QUIET = (
    "from training.tf_logs import quiet_tensorflow\n"
    "quiet_tensorflow()\n"
    "import tensorflow\n"
    "print('imported')\n"
)


def run_python(code: str, fake_tf: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    paths = [str(REPO)] if fake_tf is None else [str(fake_tf), str(REPO)]
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ |= {"PYTHONPATH": os.pathsep.join(paths), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120
    )


def fake_tensorflow(tmp_path: Path, body: str) -> Path:
    """A ``tensorflow`` module that writes to file descriptor 2 as TensorFlow's C++ does."""
    (tmp_path / "tensorflow.py").write_text(
        f"import os\nos.write(2, b'E0000 cuda_executor.cc] failed call to cuInit\\n')\n{body}\n"
    )
    return tmp_path


def test_start_up_lines_are_hidden(tmp_path: Path) -> None:
    result = run_python(QUIET, fake_tensorflow(tmp_path, "pass"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported\n"
    assert result.stderr == ""


def test_a_failing_import_shows_what_it_printed(tmp_path: Path) -> None:
    result = run_python(QUIET, fake_tensorflow(tmp_path, "raise ImportError('no libcudart')"))
    assert result.returncode == 1
    assert "failed call to cuInit" in result.stderr
    assert "ImportError: no libcudart" in result.stderr


def test_a_log_level_the_user_set_hides_nothing(tmp_path: Path) -> None:
    result = run_python(QUIET, fake_tensorflow(tmp_path, "pass"), TF_CPP_MIN_LOG_LEVEL="0")
    assert "failed call to cuInit" in result.stderr


@pytest.mark.slow
def test_the_real_tensorflow_imports_without_a_line_on_stderr() -> None:
    result = run_python(QUIET)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
