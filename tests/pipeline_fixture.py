"""The one tiny pipeline the training, conversion and serving tests share (a pytest plugin).

3 classes x 4 real photos per split, the real ImageNet base at 71 px: ``training cv`` of
``today`` and ``ft-block13-swa`` (3 folds, seed 5), each shipped into its own training
folder, then ``python -m convert --int8`` of the shipped recipe (``ft-block13-swa``). Built
once per session, on first use; the base features and activations stay in its cache
folder, so a test that trains again (``training train``) reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.datasets import copy_subset

LABELS = ("hat", "pants", "shoes")
SIZE = 71  # Xception's smallest input
METHODS = ("today", "ft-block13-swa")
SHIPPED = "ft-block13-swa"  # the recipe converted, as `make run SHIP_METHOD=...` does


@dataclass(frozen=True)
class Pipeline:
    """Where each stage of the tiny pipeline left its output."""

    data: Path  # the dataset: train/, validation/, test/, LABELS
    weights: Path  # the base weights it used
    cache: Path  # base features and activations of every photo
    cv: Path  # the cross-validation report of METHODS (chosen: SHIPPED)
    shipped: dict[str, Path]  # method -> the training folder it was shipped into
    model: Path  # convert's model.onnx from SHIPPED's folder (serve.onnx beside it)

    def common(self) -> list[str]:
        """The options every `python -m training` command of the pipeline took."""
        return [
            *("--data-dir", str(self.data), "--weights", str(self.weights)),
            *("--cache-dir", str(self.cache), "--image-size", str(SIZE), "--seed", "5"),
        ]


@pytest.fixture(scope="session")
def tiny_pipeline(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, xception_weights: Path
) -> Pipeline:
    from convert.cli import main as convert
    from training import cv_command

    root = tmp_path_factory.mktemp("pipeline")
    data = copy_subset(data_dir, root / "data", LABELS, per_class=4)
    shipped = {method: root / f"training-{method}" for method in METHODS}
    pipeline = Pipeline(
        data, xception_weights, root / "cache", root / "cv", shipped, root / "model" / "model.onnx"
    )
    pipeline.model.parent.mkdir()
    for method in METHODS:  # the second run reuses the first one's folds
        argv = [*pipeline.common(), "--k", "3", "--methods", ",".join(METHODS)]
        argv += ["--output-dir", str(pipeline.cv), "--ship", str(shipped[method])]
        assert cv_command.main([*argv, "--ship-method", method]) == 0
    argv = [str(shipped[SHIPPED]), "-o", str(pipeline.model), "--data-dir", str(data), "--int8"]
    assert convert(argv) == 0
    return pipeline
