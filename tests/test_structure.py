"""The shape of the code: no import cycles, TF-free modules stay TF-free, no private reach-ins."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("training", "convert", "lambda_function", "torch_training")

# Modules other tools import without TensorFlow: the TF-free half of training (settings,
# manifest, dataset listing) and convert's metadata, verification and quantisation.
TF_FREE = (
    "training.config",
    "training.manifest",
    "training.data",
    "training.methods",
    "training.features",
    "training.engine",
    "convert.metadata",
    "convert.verify",
    "convert.quantize",
    "convert.runtime",
    "convert.evaluate",
    "convert.report",
    "convert.source",
)


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, at any depth (lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.add(child if child in known else node.module)
    return {name for name in out if name in known}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path around each cycle found by a depth-first search."""
    found, state, stack = [], dict.fromkeys(graph, "new"), []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state[nxt] == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == "new":
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if state[node] == "new":
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "training.commands" in graph["training.cli"]  # imported inside main()
    assert "lambda_function.preprocessing" in graph["training.data"]


def test_no_import_cycle_in_the_packages() -> None:
    assert cycles(import_graph()) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    crossings = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and node.module.split(".")[0] in PACKAGES:
                    crossings.append(f"{name}: from {node.module} import {', '.join(private)}")
    assert crossings == []


def test_no_private_attribute_of_another_object_is_touched() -> None:
    """``ws._features`` from outside the class: a private name crossing a boundary."""
    reaches = []
    for name, path in modules().items():
        if not name.startswith(("training", "convert", "torch_training")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reaches.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert reaches == []


@pytest.mark.parametrize("module", TF_FREE)
def test_tf_free_modules_import_no_tensorflow(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout == "[]\n"
