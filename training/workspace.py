"""What runs share: the dataset, the frozen base per image size, pixels and cached inputs."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import data, features, views
from training.model import make_base, make_feature_extractor


@dataclass
class Workspace:
    """The dataset and everything computed from it once, then reused by every run."""

    dataset: data.Dataset
    weights: str | Path | None
    output_dir: Path
    cache_dir: Path | None = None
    strategy: tf.distribute.Strategy = field(default_factory=tf.distribute.get_strategy)
    verbose: int = 2
    _bases: dict[int, keras.Model] = field(default_factory=dict)
    _arrays: dict[Hashable, np.ndarray] = field(default_factory=dict)
    _weights_fp: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.dataset.labels

    @property
    def weights_fingerprint(self) -> str:
        if self._weights_fp is None:
            self._weights_fp = features.weights_fingerprint(self.weights)
        return self._weights_fp

    def fingerprint(self) -> dict[str, str]:
        return {"data": self.dataset.fingerprint, "weights": self.weights_fingerprint}

    def base(self, image_size: int) -> keras.Model:
        """The frozen base at ``image_size``, built once (features and models share it)."""
        if image_size not in self._bases:
            with self.strategy.scope():
                self._bases[image_size] = make_base(image_size, self.weights)
        return self._bases[image_size]

    def pixels(self, split: str, image_size: int) -> np.ndarray:
        return data.load_pixels(self.dataset, split, image_size, self.cache_dir)

    def targets(self, split: str) -> np.ndarray:
        return self.dataset[split].targets

    def remember(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()``, once per ``key``: later calls return the array kept in memory."""
        if key not in self._arrays:
            self._arrays[key] = compute()
        return self._arrays[key]

    def features(self, split: str, image_size: int) -> np.ndarray:
        """Pooled base features of a split (memory, then disk cache, else computed).

        Computed a batch of decoded photos at a time: the split's pixels are never all in
        memory (the train split at 299 px is 0.8 GB as uint8).
        """
        return self.remember(
            ("features", split, image_size),
            lambda: views.split_view_features(
                self.dataset,
                split,
                "orig",
                image_size,
                lambda: make_feature_extractor(self.base(image_size)),
                self.cache_dir,
                self.weights_fingerprint,
            ),
        )

    def cache_path(self, split: str, image_size: int, kind: str = "features") -> Path | None:
        """Where a split's ``kind`` of base output is cached (``None``: not cached)."""
        return features.cache_path(
            self.cache_dir,
            image_size,
            self.weights_fingerprint,
            self.dataset.fingerprint,
            split,
            kind=kind,
        )
