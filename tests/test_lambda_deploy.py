"""The image's files agree with the code: the hashed lock, the build context, the one model.

The linters run in `make lint-deploy`; the template's translation is in test_template.py.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lambda_function import config
from lambda_function.config import Config

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()
LOCK = REPO / "requirements" / "serve.txt"
LAMBDA_PYTHON = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
"""The markers of the Lambda Python 3.12 base image (x86_64; aarch64 differs only in
``platform_machine``, which no serve dependency uses)."""


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def locked() -> dict[str, tuple[str, list[str]]]:
    """``requirements/serve.txt`` as {name: (version, hashes)}."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split(" --hash=")
        name, _, version = requirement.strip().partition("==")
        hashes = [option.strip() for option in options]
        found[canonicalize_name(name)] = (version.split(";")[0].strip(), hashes)
    return found


def serve_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [Requirement(r) for r in project["optional-dependencies"]["serve"]]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in pins}


def closure(names: set[str]) -> set[str]:
    """``names`` and everything they require on Lambda's Python, from the installed metadata
    (the dev venv installs the same serve pins)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker or Marker("python_version >= '0'")
            if marker.evaluate(LAMBDA_PYTHON):
                todo.append(canonicalize_name(requirement.name))
    return seen


# -- the image ------------------------------------------------------------------------------


def test_the_image_runs_the_handler_on_the_lambda_python_base() -> None:
    assert instructions()[0] == ("FROM", "public.ecr.aws/lambda/python:3.12")
    assert instructions()[-1] == ("CMD", '["lambda_function.lambda_handler"]')


def test_the_image_installs_only_the_hashed_lock_in_its_own_cached_layer() -> None:
    """The first COPY brings the lock alone, so code or pyproject edits keep the layer."""
    steps = instructions()[1:]
    assert steps[0] == ("COPY", "requirements/serve.txt /tmp/serve.txt")
    kind, command = steps[1]
    assert kind == "RUN" and command.startswith("pip install ")
    options = command.split("&&")[0].split()
    assert {"--require-hashes", "--only-binary=:all:", "--no-cache-dir"} <= set(options)
    assert options[options.index("-r") + 1] == "/tmp/serve.txt"
    assert not any("pyproject" in args for _, args in steps)


def test_the_image_precompiles_its_bytecode() -> None:
    assert ("RUN", 'python3 -m compileall -q "${LAMBDA_TASK_ROOT}/lambda_function"') in (
        instructions()
    )


# -- the lock -------------------------------------------------------------------------------


def test_every_package_in_the_lock_is_pinned_with_hashes() -> None:
    for name, (version, hashes) in locked().items():
        assert re.fullmatch(r"\d+(\.\d+)*", version), (name, version)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_pins_what_pyproject_pins_for_serving() -> None:
    lock = locked()
    for name, version in serve_pins().items():
        assert lock[name][0] == version, f"{name}: lock {lock[name][0]}, pyproject {version}"


def test_the_lock_holds_the_complete_serve_closure_and_no_more() -> None:
    """``--require-hashes`` refuses to install anything the lock does not pin; a missing
    dependency would fail the build, a stray one would bloat the image."""
    assert set(locked()) == closure(set(serve_pins()))


def test_the_lock_never_pulls_training_packages() -> None:
    assert not {"tensorflow", "keras", "tf2onnx", "onnx", "h5py"} & set(locked())


# -- the build context ------------------------------------------------------------------------


CONTEXT_IN = [
    "requirements/serve.txt",
    "lambda_function/handler.py",
    "lambda_function/fetch/http.py",
    "artifacts/model/serve.onnx",
    "artifacts/model/known/known.json",
    "artifacts/model/known/00-dress.jpg",
    "Dockerfile",
]
CONTEXT_OUT = [
    "pyproject.toml",
    "uv.lock",
    "training/engine.py",
    "convert/pipeline.py",
    "tests/conftest.py",
    "data/clothing-dataset-small/train/pants/a.jpg",
    "artifacts/training/model.h5",
    "artifacts/model/model.onnx",
    "artifacts/model/model.int8.onnx",
    "artifacts/model/report.json",
    ".venv/bin/python",
    "lambda_function/__pycache__/handler.cpython-312.pyc",
    "lambda_function/model.onnx",
    "lambda_function/serve.onnx",
]


def test_the_docker_context_is_what_sam_build_sends(tmp_path: Path) -> None:
    """docker-py's own ``exclude_paths`` (what ``sam build`` calls) on a tree with these
    files: the image's inputs go in, nothing else does."""
    for path in CONTEXT_IN + CONTEXT_OUT:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in patterns if p.strip() and not p.startswith("#")]
    sent = set(exclude_paths(str(tmp_path), patterns, dockerfile="Dockerfile"))
    assert set(CONTEXT_IN) <= sent
    assert not set(CONTEXT_OUT) & sent


def test_one_served_model_name_in_the_dockerfile_the_context_and_the_default() -> None:
    copies = [args.split() for kind, args in instructions() if kind == "COPY"]
    models = [(source, target) for source, target in copies if source.endswith(".onnx")]
    assert models == [
        (
            str(config.SERVED_MODEL),
            f"${{LAMBDA_TASK_ROOT}}/lambda_function/{config.PACKAGE_MODEL.name}",
        )
    ]
    assert Path("artifacts/model/serve.onnx") == config.SERVED_MODEL
    assert f"!{config.SERVED_MODEL}" in (REPO / ".dockerignore").read_text().splitlines()


def test_the_default_model_is_the_baked_one_else_the_served_one(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(config, "PACKAGE_MODEL", tmp_path / "absent.onnx")
    assert config.default_model_path() == config.SERVED_MODEL
    baked = tmp_path / "serve.onnx"
    baked.write_bytes(b"onnx")
    monkeypatch.setattr(config, "PACKAGE_MODEL", baked)
    assert config.default_model_path() == baked
    assert Config.from_env({}).model_path == baked


def test_the_image_bakes_the_known_set_where_convert_writes_it_and_the_hook_reads_it() -> None:
    from convert.pipeline import Options
    from lambda_function import deploy_check

    copies = [args.split() for kind, args in instructions() if kind == "COPY"]
    known = Options().known_dir
    assert (f"{known}/", f"${{LAMBDA_TASK_ROOT}}/lambda_function/{known.name}/") in [
        tuple(c) for c in copies
    ]
    assert config.PACKAGE_MODEL.with_name(known.name) == deploy_check.KNOWN_DIR
    assert known.parent == config.SERVED_MODEL.parent
    assert f"!{known}/" in (REPO / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize("stale", ["model.int8.onnx", "model.onnx"])
def test_a_stale_variant_next_to_the_served_model_is_never_picked(
    monkeypatch, tmp_path, stale
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "PACKAGE_MODEL", tmp_path / "absent.onnx")
    (tmp_path / "artifacts" / "model").mkdir(parents=True)
    (tmp_path / "artifacts" / "model" / stale).write_bytes(b"stale")
    assert Config.from_env({}).model_path == Path("artifacts/model/serve.onnx")


# -- the template ---------------------------------------------------------------------------


def test_every_variable_the_template_sets_is_read_by_the_function() -> None:
    template = (REPO / "template.yaml").read_text()
    block = template.split("Variables:", 1)[1].split("Policies:", 1)[0]
    names = re.findall(r"^\s+([A-Z][A-Z0-9_]+):", block, re.M)
    assert names
    sources = "".join(p.read_text() for p in (REPO / "lambda_function").rglob("*.py"))
    for name in names:
        assert f'"{name}"' in sources, name
    Config.from_env({"MAX_BATCH": "8", "MAX_IMAGE_BYTES": "10485760", "FETCH_TIMEOUT": "10"})
