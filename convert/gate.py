"""``python -m convert.gate``: may a candidate model replace the live one?

Both models answer the same labelled photos through the serving preprocessing; the
accuracy difference (candidate - live) is paired photo by photo, and a bootstrap over the
photos gives its interval. The candidate is refused (exit 1) when it is **worse**:

- the interval lies below zero (its upper bound < 0: worse beyond the photos' chance), or
- the point estimate is below ``-max_drop`` (default 1 point, the int8 rule's tolerance):
  a drop too large to ship on hope, even when the photos are too few to prove it.

Exit codes: 0 accepted; 1 refused; 2 bad input (unreadable model, different labels, a
folder without labelled photos).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConvertError
from convert.evaluate import load_pixels
from convert.images import Photo, labelled_split
from convert.runtime import onnx_logits, open_session, session_metadata
from lambda_function import files
from lambda_function.model_metadata import ModelMetadata, ModelMetadataError

MAX_DROP = 0.01
CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class GateOptions:
    """What to compare, on which photos, and how strictly."""

    candidate: Path
    live: Path
    folders: tuple[Path, ...]
    max_drop: float = MAX_DROP
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = 0
    report: Path | None = None


@dataclass(frozen=True)
class Comparison:
    """The paired comparison and its verdict; accuracies and differences are fractions."""

    photos: int
    live_accuracy: float
    candidate_accuracy: float
    difference: float
    interval: tuple[float, float]
    confidence: float
    only_live_right: int
    only_candidate_right: int
    max_drop: float
    accepted: bool
    reason: str


def paired_bootstrap(
    live: np.ndarray, candidate: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of ``mean(candidate) - mean(live)`` over photos drawn with
    replacement (the same draw for both models: the pairing)."""
    if live.shape != candidate.shape or live.ndim != 1 or not len(live):
        raise ValueError(
            f"Expected two equal, non-empty 1-D hit vectors. Received: {live.shape}, "
            f"{candidate.shape}"
        )
    differences = candidate.astype(np.float64) - live.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for large sets
        stop = min(start + 1000, resamples)
        draw = rng.integers(0, len(differences), size=(stop - start, len(differences)))
        means[start:stop] = differences[draw].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def decide(difference: float, interval: tuple[float, float], max_drop: float) -> tuple[bool, str]:
    """Accepted unless worse (see the module's docstring); the reason says which rule."""
    if interval[1] < 0:
        return False, (
            f"worse: the whole interval is below zero (upper bound {interval[1]:+.1%} < 0)"
        )
    if difference < -max_drop:
        return False, f"worse: accuracy {difference:+.1%}, below the allowed -{max_drop:.1%}"
    return True, "not worse: the interval reaches zero and the drop is within the allowance"


def compare(options: GateOptions) -> Comparison:
    """Score both models on the folders' photos and decide."""
    live_session, candidate_session = _session(options.live), _session(options.candidate)
    live_meta = _metadata(live_session, options.live)
    candidate_meta = _metadata(candidate_session, options.candidate)
    if tuple(live_meta.labels) != tuple(candidate_meta.labels):
        raise ConvertError(
            f"Expected the candidate to answer the live model's labels {list(live_meta.labels)}. "
            f"Received: {list(candidate_meta.labels)}"
        )
    photos = _photos(options.folders, live_meta.labels)
    labels = np.array([p.label for p in photos])
    hits = {}
    for name, session, meta in (
        ("live", live_session, live_meta),
        ("candidate", candidate_session, candidate_meta),
    ):
        pixels = load_pixels(photos, meta.image_size)
        hits[name] = onnx_logits(session, pixels, scale=True).argmax(axis=1) == labels
    live, candidate = hits["live"], hits["candidate"]
    difference = float(candidate.mean() - live.mean())
    interval = paired_bootstrap(
        live, candidate, options.resamples, options.confidence, options.seed
    )
    accepted, reason = decide(difference, interval, options.max_drop)
    return Comparison(
        photos=len(photos),
        live_accuracy=float(live.mean()),
        candidate_accuracy=float(candidate.mean()),
        difference=difference,
        interval=interval,
        confidence=options.confidence,
        only_live_right=int((live & ~candidate).sum()),
        only_candidate_right=int((candidate & ~live).sum()),
        max_drop=options.max_drop,
        accepted=accepted,
        reason=reason,
    )


def summary(result: Comparison, options: GateOptions) -> str:
    low, high = result.interval
    return "\n".join(
        [
            f"gate: {result.photos} labelled photos",
            f"live      {options.live}: accuracy {result.live_accuracy:.3f}",
            f"candidate {options.candidate}: accuracy {result.candidate_accuracy:.3f}",
            f"difference {result.difference:+.1%}, {result.confidence:.0%} interval "
            f"[{low:+.1%}, {high:+.1%}] (paired bootstrap, {options.resamples} resamples); "
            f"only live right {result.only_live_right}, only candidate right "
            f"{result.only_candidate_right}",
            ("ACCEPTED: " if result.accepted else "REFUSED: ") + result.reason,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, compare, print the verdict; returns the exit code."""
    options = parse_args(argv)
    try:
        result = compare(options)
    except ConvertError as exc:
        print(f"gate: error: {exc}", file=sys.stderr)
        return 2
    if options.report is not None:
        files.write_text_atomic(options.report, json.dumps(asdict(result), indent=2) + "\n")
    print(summary(result, options))
    return 0 if result.accepted else 1


def parse_args(argv: Sequence[str] | None = None) -> GateOptions:
    parser = argparse.ArgumentParser(
        prog="python -m convert.gate",
        description="Refuse a candidate ONNX model that is worse than the live one on the "
        "same labelled photos (paired bootstrap interval of the accuracy difference).",
        epilog="example: python -m convert.gate --candidate new/serve.onnx "
        "--live artifacts/model/serve.onnx $DATA_DIR/validation $DATA_DIR/test",
    )
    parser.add_argument("--candidate", type=Path, required=True, help="the model to promote")
    parser.add_argument("--live", type=Path, required=True, help="the model served now")
    parser.add_argument(
        "folders", type=Path, nargs="+", help="labelled photo folders: one folder per category"
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=MAX_DROP,
        help="largest accuracy drop accepted, as a fraction (default: %(default)s)",
    )
    parser.add_argument("--confidence", type=float, default=CONFIDENCE)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    if not 0 <= args.max_drop < 1:
        parser.error(f"--max-drop must be in [0, 1). Received: {args.max_drop}")
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence must be in (0, 1). Received: {args.confidence}")
    if args.resamples < 100:
        parser.error(f"--resamples must be >= 100. Received: {args.resamples}")
    return GateOptions(
        candidate=args.candidate,
        live=args.live,
        folders=tuple(args.folders),
        max_drop=args.max_drop,
        confidence=args.confidence,
        resamples=args.resamples,
        seed=args.seed,
        report=args.report,
    )


def _session(path: Path) -> Any:
    if not path.is_file():
        raise ConvertError(f"{path}: no such model file")
    try:
        return open_session(path)
    except Exception as exc:
        raise ConvertError(f"{path}: not a loadable ONNX model ({exc})") from exc


def _metadata(session: Any, path: Path) -> ModelMetadata:
    try:
        return session_metadata(session)
    except ModelMetadataError as exc:
        raise ConvertError(f"{path}: {exc}") from exc


def _photos(folders: Sequence[Path], labels: Sequence[str]) -> list[Photo]:
    """Every photo of each folder (``<folder>/<category>/...``), as training lists them."""
    photos: list[Photo] = []
    for folder in folders:
        photos += labelled_split(folder.parent, folder.name, labels)
    return photos


if __name__ == "__main__":
    sys.exit(main())
