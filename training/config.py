"""Settings, free of TensorFlow: where things are, the base, the seed, the image size.

Each default is written down here once; both commands (``train``, ``cv``) build their
common options with :func:`add_common`. The recipe itself is a
:class:`training.methods.Method`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.augment import Augmentation
from training.tf_logs import TF_LOG_HELP

DATA_DIR = Path("data/clothing-dataset-small")
TRAINING_DIR = Path("artifacts/training")
CV_DIR = Path("artifacts/cv")
CACHE_DIR = Path("artifacts/cache")
WEIGHTS = "imagenet"
IMAGE_SIZE = 299
SEED = 1


def add_common(p: argparse.ArgumentParser) -> None:
    """Data, base weights, cache, seed, image size and log options (``$DATA_DIR``, ...)."""
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", DATA_DIR)),
        help="dataset root with train/, validation/, test/, one folder per class "
        f"(default: $DATA_DIR or {DATA_DIR})",
    )
    p.add_argument(
        "--weights",
        default=os.environ.get("XCEPTION_WEIGHTS", WEIGHTS),
        help="base weights: 'imagenet' (Keras download), a .weights.h5 path (include_top="
        "False), or 'none' for random weights (tests) (default: $XCEPTION_WEIGHTS or imagenet)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE_DIR,
        help="base features and activations, reused across runs (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=SEED, help="seed (default: %(default)s)")
    p.add_argument(
        "--image-size",
        type=int,
        default=IMAGE_SIZE,
        help="input size in px, >= 71 (default: %(default)s)",
    )
    p.add_argument("--tf-log", action="store_true", help=TF_LOG_HELP)


def weights(value: str | None) -> str | None:
    """The ``--weights`` value as the base takes it (``none``: random weights)."""
    return None if value is None or str(value).lower() == "none" else value


def check_head(size_inner: int, droprate: float, n_classes: int) -> None:
    """Refuse head settings no framework can build (both frameworks call this)."""
    if size_inner < 0:
        raise ValueError(f"Expected size_inner >= 0 (0: no inner layer). Received: {size_inner}")
    if not 0 <= droprate < 1:
        raise ValueError(f"Expected 0 <= droprate < 1. Received: droprate={droprate}")
    if n_classes < 2:
        raise ValueError(f"Expected at least 2 classes. Received: n_classes={n_classes}")


@dataclass(frozen=True)
class RunConfig:
    """The PyTorch port's run settings (``torch_training``); the Keras path uses ``Method``."""

    image_size: int = IMAGE_SIZE
    learning_rate: float = 1e-3
    size_inner: int = 100
    droprate: float = 0.2
    epochs: int = 20
    batch_size: int = 32
    label_smoothing: float = 0.0
    l2: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = SEED
    name: str = ""
    fine_tune_from: str = ""  # "": frozen base; "block13"/"block14": fine-tune from there up
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-4

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
        return "_".join(parts)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["name"] = self.run_name
        record["path"] = "fast (cached features)" if self.fast else "full (augmented images)"
        if self.fine_tune_from:
            record["path"] = f"fine-tune from {self.fine_tune_from} (cached activations)"
        return record
