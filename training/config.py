"""What one training run is: a frozen, JSON-friendly record of its settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from training.augment import Augmentation


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

    def with_(self, **changes) -> RunConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["name"] = self.run_name
        record["path"] = "fast (cached features)" if self.fast else "full (augmented images)"
        if self.fine_tune_from:
            record["path"] = f"fine-tune from {self.fine_tune_from} (cached activations)"
        return record
