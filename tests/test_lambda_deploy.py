"""The deployment files agree with the code (the linters run in `make lint-deploy`)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lambda_function.config import Config

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _admitted(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    admitted = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            admitted = negated
    return admitted


def test_the_image_runs_the_handler_on_the_lambda_python_base() -> None:
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.12$", DOCKERFILE, re.M)
    assert DOCKERFILE.rstrip().endswith('CMD ["lambda_function.lambda_handler"]')


def test_the_image_installs_exactly_the_serve_extra(tmp_path: Path) -> None:
    snippet = re.search(r'RUN python3 -c "(.*?)" \\', DOCKERFILE).group(1)  # type: ignore[union-attr]
    (tmp_path / "tmp").mkdir()
    code = snippet.replace("/tmp/", f"{tmp_path}/tmp/")
    (tmp_path / "tmp" / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    subprocess.run([sys.executable, "-c", code], check=True)
    requirements = (tmp_path / "tmp" / "requirements.txt").read_text().split()
    serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert requirements == serve["optional-dependencies"]["serve"]
    assert not any(name.startswith(("tensorflow", "keras")) for name in requirements)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "lambda_function/handler.py", "artifacts/model/model.int8.onnx"]
)
def test_the_docker_context_lets_in_what_the_image_copies(path: str) -> None:
    assert _admitted(path)


@pytest.mark.parametrize(
    "path",
    [
        "training/train.py",
        "convert/pipeline.py",
        "tests/conftest.py",
        "data/clothing-dataset-small/train/pants/a.jpg",
        "artifacts/training/model.h5",
        "artifacts/model/model.onnx",
        ".venv/bin/python",
        "lambda_function/__pycache__/handler.cpython-312.pyc",
        "lambda_function/model.onnx",
    ],
)
def test_the_docker_context_keeps_everything_else_out(path: str) -> None:
    assert not _admitted(path)


def test_every_variable_the_template_sets_is_read_by_the_function() -> None:
    template = (REPO / "template.yaml").read_text()
    block = template.split("Variables:", 1)[1].split("Policies:", 1)[0]
    names = re.findall(r"^\s+([A-Z][A-Z0-9_]+):", block, re.M)
    assert names
    sources = "".join(p.read_text() for p in (REPO / "lambda_function").glob("*.py"))
    for name in names:
        assert f'"{name}"' in sources, name
    Config.from_env({"MAX_BATCH": "8", "MAX_IMAGE_BYTES": "10485760", "FETCH_TIMEOUT": "10"})
