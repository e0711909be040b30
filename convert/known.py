"""The model's known-answer set: a few labelled photos it answers right and confidently.

``python -m convert`` writes it beside ``serve.onnx`` (``known/``: the photos, copied as
they are, and ``known.json``), the Dockerfile bakes it into the image next to the model,
and the pre-traffic hook (:mod:`lambda_function.deploy_check`) replays it against every new
version. The photos are scored through the serving path (the same decoding, resizing and
calibrated softmax), and per class the most confident right answers are kept, so a healthy
deployment of this model passes with a wide margin and a broken one (wrong model file,
broken preprocessing, a failing runtime) cannot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError
from convert.images import Photo, labelled_split, spread_sample
from lambda_function import files
from lambda_function.config import SERVED_MODEL, Config
from lambda_function.deploy_check import MANIFEST
from lambda_function.errors import ModelUnavailableError
from lambda_function.model import Classifier
from lambda_function.preprocessing import prepare

KNOWN_NAME = "known"
"""The set's folder, beside ``serve.onnx``."""
PER_CLASS = 2
CANDIDATES_PER_CLASS = 10
"""Validation photos per class scored for the set (the most confident right ones stay)."""
MIN_PROBABILITY = 0.5
MAX_PHOTO_BYTES = Config.max_upload_bytes
"""The hook sends each photo in its request: larger ones would be refused (413)."""
"""A kept photo's top probability is at least this (or the model's confidence threshold)."""


@dataclass(frozen=True)
class KnownAnswer:
    """A photo of the set: its file there, the category and how sure the model was."""

    file: str
    category: str
    probability: float
    source: str
    """The photo it was copied from (not written to the manifest)."""


def select(model: Path, photos: Sequence[Photo], per_class: int = PER_CLASS) -> list[KnownAnswer]:
    """Per class, the ``per_class`` photos of ``photos`` the model answers right most surely.

    Only photos answered right with at least the model's confidence threshold (or
    :data:`MIN_PROBABILITY` without one), and small enough to send in a request, qualify;
    a class may end up with fewer or none.
    """
    classifier = Classifier.load(model)
    metadata = classifier.metadata
    floor = metadata.confidence_threshold or MIN_PROBABILITY
    right: dict[int, list[tuple[float, Photo]]] = {}
    for photo in photos:
        if photo.label is None:
            raise ValueError(f"Expected labelled photos. Received: {photo.path} without a label")
        data = photo.path.read_bytes()
        if len(data) > MAX_PHOTO_BYTES:
            continue  # the hook sends photos in the request, which caps them
        x, _ = prepare(data, metadata.image_size)
        probabilities = classifier.predict(x)[0]
        best = int(probabilities.argmax())
        if best == photo.label and probabilities[best] >= floor:
            right.setdefault(best, []).append((float(probabilities[best]), photo))
    kept: list[KnownAnswer] = []
    for label in sorted(right):
        ranked = sorted(right[label], key=lambda pair: (-pair[0], str(pair[1].path)))
        for probability, photo in ranked[:per_class]:
            category = metadata.labels[label]
            name = f"{len(kept):02d}-{category}{photo.path.suffix.lower()}"
            kept.append(KnownAnswer(name, category, round(probability, 6), str(photo.path)))
    return kept


def write_known_set(
    model: Path, photos: Sequence[Photo], directory: Path, per_class: int = PER_CLASS
) -> list[KnownAnswer]:
    """Replace ``directory`` with the set of ``model`` drawn from ``photos``.

    The new set is built in a temporary folder beside it and swapped in at the end, so a
    failed run leaves no set that mixes two models. Raises :class:`ConvertError` when no
    photo qualifies.
    """
    kept = select(model, photos, per_class)
    if not kept:
        remove_known_set(directory)
        raise ConvertError(
            f"{model}: expected at least one of {len(photos)} labelled photos answered right "
            "with confidence, for the known-answer set. Received none"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        for answer in kept:
            shutil.copyfile(answer.source, staging / answer.file)
        manifest = {
            "model": {"sha256": files.sha256_file(model)},
            "photos": [
                {"file": a.file, "category": a.category, "probability": a.probability} for a in kept
            ],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the set from the Lambda's user
        remove_known_set(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return kept


def remove_known_set(directory: Path) -> None:
    """Remove an older set, so no model ever ships with another model's answers."""
    shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convert.known``: (re)write the set of an already converted model."""
    parser = argparse.ArgumentParser(
        prog="python -m convert.known",
        description="Write the known-answer set of a served model (known/ beside it), which "
        "the Dockerfile bakes in and the pre-traffic hook replays. python -m convert "
        "writes it already; this is for a model converted without it.",
    )
    parser.add_argument("--model", type=Path, default=SERVED_MODEL)
    parser.add_argument("split", type=Path, help="labelled photos: one folder per category")
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        labels = Classifier.load(args.model).metadata.labels
        photos = labelled_split(args.split.parent, args.split.name, labels)
        candidates = spread_sample(photos, CANDIDATES_PER_CLASS * len(labels), args.seed)
        kept = write_known_set(args.model, candidates, args.model.with_name(KNOWN_NAME))
    except (ConvertError, ModelUnavailableError) as exc:
        print(f"known: error: {exc}", file=sys.stderr)
        return 2
    print(f"known: {len(kept)} photos -> {args.model.with_name(KNOWN_NAME)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
