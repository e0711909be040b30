"""What a conversion did: the typed report behind ``report.json``, and what is served."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convert.checkpoint import LoadedCheckpoint
from convert.verify import Verification


@dataclass(frozen=True)
class Served:
    """Which model ``serve.onnx`` is a copy of."""

    variant: str  # "int8" or "fp32"
    path: Path  # serve.onnx
    source: Path  # the verified file it copies
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "path": str(self.path),
            "source": str(self.source),
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Report:
    """What a conversion did, as far as it got (``report.json`` is :meth:`to_dict`)."""

    model: Path
    checkpoint: LoadedCheckpoint
    opset: int
    sizes_bytes: dict[str, int]
    timings_s: dict[str, float]
    verification: Verification | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: Served | None = None
    wall_s: float | None = None

    @property
    def rejected(self) -> list[str]:
        """The variants that failed their gate."""
        return [name for name, v in self.variants.items() if not v.get("accepted", True)]

    @property
    def passed(self) -> bool:
        """The model verified, and every variant asked for accepted."""
        return self.verification is not None and self.verification.passed and not self.rejected

    def to_dict(self) -> dict[str, Any]:
        checkpoint = self.checkpoint
        return {
            "passed": self.passed,
            "model": str(self.model),
            "served": self.served.to_dict() if self.served else None,
            "checkpoint": {
                "path": str(checkpoint.path),
                "sha256": checkpoint.sha256,
                "run": checkpoint.run,
                "manifest": str(checkpoint.manifest) if checkpoint.manifest else None,
                "val_accuracy": checkpoint.val_accuracy,
            },
            "labels": list(checkpoint.labels),
            "image_size": checkpoint.image_size,
            "opset": self.opset,
            "sizes_bytes": dict(self.sizes_bytes),
            "timings_s": dict(self.timings_s),
            "verification": self.verification.to_dict() if self.verification else None,
            "variants": self.variants,
            "wall_s": self.wall_s,
        }
