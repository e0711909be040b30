"""Settings, free of TensorFlow: one run, a sweep, the command line, and the selection rule.

Everything a default or a rule is written down as lives here once; the command line
(:mod:`training.cli`) builds its argparse defaults from these dataclasses, and the
code that trains (:mod:`training.commands`, :mod:`training.tune`) reads the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.augment import COURSE, Augmentation

RULE = (
    "best = highest best-epoch validation accuracy; ties -> fewer trainable parameters, "
    "then earlier best epoch, then earlier in the sweep"
)
"""How a sweep (and each of its stages) picks its best run: :func:`training.tune.pick_best`."""

STAGES = ("lr", "inner", "dropout", "aug")
"""The sweep's stages, in the order they run by default."""

TRAINING_DIR = Path("artifacts/training")
TUNING_DIR = Path("artifacts/tuning")
CACHE_DIR = Path("artifacts/cache")
DATA_DIR = Path("data/clothing-dataset-small")


def check_head(size_inner: int, droprate: float, n_classes: int) -> None:
    """Refuse head settings no framework can build (both trainers call this)."""
    if size_inner < 0:
        raise ValueError(f"Expected size_inner >= 0 (0: no inner layer). Received: {size_inner}")
    if not 0 <= droprate < 1:
        raise ValueError(f"Expected 0 <= droprate < 1. Received: droprate={droprate}")
    if n_classes < 2:
        raise ValueError(f"Expected at least 2 classes. Received: n_classes={n_classes}")


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run (what the manifest records under ``config``)."""

    image_size: int = 299
    learning_rate: float = 1e-3
    size_inner: int = 100
    droprate: float = 0.2
    epochs: int = 20
    batch_size: int = 32
    label_smoothing: float = 0.0
    l2: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 1
    name: str = ""
    fine_tune_from: str = ""  # "": frozen base; "block13"/"block14": fine-tune from there up
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-4
    fine_tune_flip: bool = False  # add mirrored copies of the train images (cached too)

    @property
    def fast(self) -> bool:
        """Frozen base and no augmentation: the top can train on cached features."""
        return not self.augmentation.enabled

    @property
    def run_name(self) -> str:
        """``name``, or one made from the settings (``s299_lr0.001_in100_dr0.2``)."""
        if self.name:
            return self.name
        parts = [
            f"s{self.image_size}",
            f"lr{self.learning_rate:g}",
            f"in{self.size_inner}",
            f"dr{self.droprate:g}",
        ]
        if self.label_smoothing:
            parts.append(f"ls{self.label_smoothing:g}")
        if self.l2:
            parts.append(f"l2{self.l2:g}")
        if self.augmentation.enabled:
            parts.append("aug")
        if self.fine_tune_from:
            parts.append(f"ft{self.fine_tune_from.removeprefix('block')}")
            if self.fine_tune_flip:
                parts.append("flip")
        return "_".join(parts)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["name"] = self.run_name
        record["path"] = "fast (cached features)" if self.fast else "full (augmented images)"
        if self.fine_tune_from:
            record["path"] = f"fine-tune from {self.fine_tune_from} (cached activations)"
        return record


TUNE_RUN = RunConfig(image_size=150)
"""The configuration a sweep starts from: 150 px to explore, 299 (the default) to ship."""


@dataclass(frozen=True)
class SweepPlan:
    """The values each stage of a sweep tries, and which stages run."""

    learning_rates: Sequence[float] = (0.0001, 0.001, 0.01, 0.1)
    inner_sizes: Sequence[int] = (10, 100, 1000)
    droprates: Sequence[float] = (0.0, 0.2, 0.5, 0.8)
    augmentation: Augmentation = COURSE
    aug_epochs: int | None = None  # epochs of the augmented run (None: the base config's)
    stages: Sequence[str] = STAGES


@dataclass(frozen=True)
class Options:
    """A parsed ``python -m training`` command line."""

    command: str
    data_dir: Path = DATA_DIR
    weights: str | None = "imagenet"  # a .weights.h5 path, "imagenet", or None (random)
    output_dir: Path = TRAINING_DIR
    cache_dir: Path | None = CACHE_DIR
    run: RunConfig = field(default_factory=RunConfig)
    verbose: int = 2
    mixed_precision: bool = False
    evaluate: bool = True  # train: score the best checkpoint on test afterwards
    run_name: str | None = None  # evaluate: None = the manifest's best_run
    split: str = "test"  # evaluate
    sweep: SweepPlan = field(default_factory=SweepPlan)  # tune
