"""Prove that the ONNX model answers like the Keras model, on real photos.

Two checks, both on every photo of the sample:

* **parity**: Keras and onnxruntime on the same preprocessed batch (the reference
  pipeline: ``keras.utils.load_img`` + ``xception.preprocess_input``);
* **user path**: what the Lambda does, the serving package's ``preprocess`` and
  onnxruntime one image at a time with the size read from the model's own metadata,
  against ``model.predict`` on the reference pipeline.

Each passes when max |Δ logits| <= the tolerance and the top-1 class agrees on every
photo. Photos where serving's preprocessing deliberately corrects ``load_img`` (EXIF
orientation, transparency, 16-bit: :func:`lambda_function.preprocessing.corrections`)
are listed and left out of the user-path check; any other difference in the pixels
fails it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from convert.errors import ConvertError, VerificationError
from convert.images import Photo
from convert.runtime import BATCH_SIZE, onnx_logits, open_session, progress, session_metadata
from convert.to_onnx import INPUT_NAME
from lambda_function import preprocessing
from lambda_function.model import SignatureError, check_signature
from lambda_function.model_metadata import OUTPUT, ModelMetadataError

if TYPE_CHECKING:
    import keras

TOLERANCE = 1e-4
CHUNK = 16 * BATCH_SIZE
"""Photos checked at a time: whole batches, so every batch, and every figure, is the same
as with all photos at once (Keras and onnxruntime both run batches of BATCH_SIZE)."""


@dataclass(frozen=True)
class Comparison:
    """How far a candidate's logits are from the reference's, photo by photo."""

    n_images: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # fraction of photos whose top-1 class is the same
    tolerance: float
    over_tolerance: tuple[str, ...] = ()  # photos with some |Δ logit| > tolerance
    top1_changed: tuple[str, ...] = ()  # photos whose top-1 class differs

    @property
    def passed(self) -> bool:
        return self.n_images > 0 and not self.over_tolerance and not self.top1_changed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class Verification:
    """The outcome of both checks, with timings in seconds."""

    parity: Comparison
    user_path: Comparison
    preprocessing_corrected: tuple[str, ...]  # deliberately different pixels: left out
    preprocessing_mismatch: tuple[str, ...]  # different pixels, no reason: a failure
    timings_s: dict[str, float] = field(default_factory=dict)
    # Kept to check variants against Keras without running it again.
    names: tuple[str, ...] = field(default=(), repr=False)
    inputs: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    keras_logits: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.parity.passed and self.user_path.passed and not self.preprocessing_mismatch

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "parity": self.parity.to_dict(),
            "user_path": {
                **self.user_path.to_dict(),
                "preprocessing_corrected": list(self.preprocessing_corrected),
                "preprocessing_mismatch": list(self.preprocessing_mismatch),
            },
            "timings_s": self.timings_s,
        }


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    names: Sequence[str],
    tolerance: float = TOLERANCE,
) -> Comparison:
    """Compare two ``(N, n_classes)`` logit arrays row by row."""
    if reference.shape != candidate.shape or reference.shape[0] != len(names):
        raise ValueError(
            f"Expected logits of one shape for {len(names)} photos. Received "
            f"{reference.shape} and {candidate.shape}"
        )
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    same_top1 = reference.argmax(axis=1) == candidate.argmax(axis=1)
    worst = diff.max(axis=1) if len(names) else np.zeros(0)
    return Comparison(
        n_images=len(names),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=float(same_top1.mean()) if len(names) else 0.0,
        tolerance=tolerance,
        over_tolerance=tuple(n for n, w in zip(names, worst, strict=True) if w > tolerance),
        top1_changed=tuple(n for n, s in zip(names, same_top1, strict=True) if not s),
    )


def reference_inputs(photos: Sequence[Photo], size: int) -> np.ndarray:
    """The reference pipeline: ``load_img`` (NEAREST) + ``xception.preprocess_input``."""
    import keras

    images = np.empty((len(photos), size, size, 3), dtype="float32")  # one copy, filled
    for i, photo in enumerate(progress(photos, "Keras inputs")):
        try:
            image = keras.utils.load_img(photo.path, target_size=(size, size))
        except (OSError, ValueError, SyntaxError) as exc:
            raise ConvertError(f"{photo.path}: not a readable image ({exc})") from exc
        images[i] = np.asarray(image, dtype="float32")
    return keras.applications.xception.preprocess_input(images)


def serving_inputs(photos: Sequence[Photo], size: int) -> np.ndarray:
    """Serving's own preprocessing of ``photos``, as one batch (no Keras needed).

    The reference inputs for a model that was not trained through ``load_img`` (a PyTorch
    model, say); the user-path check then compares the same pixels.
    """
    return np.concatenate(
        [preprocessing.preprocess(p.path.read_bytes(), size) for p in progress(photos, "inputs")]
    )


def keras_logits(model: keras.Model, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """``model.predict`` in batches, as float32 logits."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


Reference = Callable[[np.ndarray], np.ndarray]
"""The model the ONNX file must match: an ``(N, S, S, 3)`` float32 batch in, logits out."""


def verify_model(
    onnx_path: Path,
    model: keras.Model | Reference,
    photos: Sequence[Photo],
    *,
    names: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
    inputs: Callable[[Sequence[Photo], int], np.ndarray] = reference_inputs,
    keep_inputs: bool = False,
) -> Verification:
    """Run both checks of the ONNX model at ``onnx_path`` against ``model``.

    ``model`` is a Keras model, or any function from a batch to logits (TensorFlow is then
    not needed if ``inputs`` is :func:`serving_inputs`). ``inputs`` builds the reference
    batch: Keras' ``load_img`` pipeline by default. Photos are checked :data:`CHUNK` at a
    time, so memory does not grow with their number; ``keep_inputs`` keeps every reference
    input in the result (to check a variant against the same Keras logits later).
    """
    reference = model if not hasattr(model, "predict") else partial(keras_logits, model)
    names = list(names) if names is not None else [str(p.path) for p in photos]
    if len(names) != len(photos):
        raise ValueError(f"Expected one name per photo. Received {len(names)} for {len(photos)}")
    clock = time.perf_counter()
    session = open_session(onnx_path)
    try:
        metadata = session_metadata(session)
    except ModelMetadataError as exc:
        raise VerificationError(f"{onnx_path}: {exc}") from exc
    try:
        check_signature(session, metadata)
    except SignatureError as exc:
        raise VerificationError(f"{onnx_path}: {exc}") from exc
    timings = {"session_open": time.perf_counter() - clock}

    if not photos:
        raise ConvertError("Expected at least one photo to verify the model on. Received none")
    size = metadata.image_size
    chunks = [
        _check_chunk(session, reference, inputs, photos[i : i + CHUNK], size, keep_inputs)
        for i in range(0, len(photos), CHUNK)
    ]
    expected = _joined([c.expected for c in chunks])
    actual = _joined([c.actual for c in chunks])
    served = _joined([c.served for c in chunks])
    corrected = {names[i + k * CHUNK] for k, c in enumerate(chunks) for i in c.corrected}
    unexplained = [names[i + k * CHUNK] for k, c in enumerate(chunks) for i in c.unexplained]
    for stage in ("reference_preprocess", "keras_predict", "onnx_batch"):
        timings[stage + "_per_image"] = sum(c.seconds[stage] for c in chunks) / len(photos)
    timings["onnx_batch1_median"] = float(np.median([t for c in chunks for t in c.latencies]))

    keep = [i for i, n in enumerate(names) if n not in corrected]
    return Verification(
        compare(expected, actual, names, tolerance),
        compare(expected[keep], served[keep], [names[i] for i in keep], tolerance),
        preprocessing_corrected=tuple(n for n in names if n in corrected),
        preprocessing_mismatch=tuple(unexplained),
        timings_s=timings,
        names=tuple(names),
        inputs=_joined([c.inputs for c in chunks]) if keep_inputs else np.zeros(0),
        keras_logits=expected,
    )


@dataclass(frozen=True)
class _Chunk:
    """Both checks on a few photos: logits, and which photos' pixels differ, by index."""

    inputs: np.ndarray  # empty unless kept
    expected: np.ndarray
    actual: np.ndarray
    served: np.ndarray
    latencies: list[float]
    corrected: list[int]
    unexplained: list[int]
    seconds: dict[str, float]


def _check_chunk(
    session: Any,
    reference: Reference,
    inputs: Callable[[Sequence[Photo], int], np.ndarray],
    photos: Sequence[Photo],
    size: int,
    keep_inputs: bool,
) -> _Chunk:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    x = inputs(photos, size)
    seconds["reference_preprocess"] = time.perf_counter() - clock
    clock = time.perf_counter()
    expected = np.asarray(reference(x), dtype=np.float32)
    seconds["keras_predict"] = time.perf_counter() - clock
    clock = time.perf_counter()
    actual = onnx_logits(session, x)
    seconds["onnx_batch"] = time.perf_counter() - clock
    served, latencies, corrected, unexplained = _user_path(session, photos, x, size)
    kept = x if keep_inputs else np.zeros(0, dtype=np.float32)
    return _Chunk(kept, expected, actual, served, latencies, corrected, unexplained, seconds)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)


def _user_path(
    session: Any, photos: Sequence[Photo], reference: np.ndarray, size: int
) -> tuple[np.ndarray, list[float], list[int], list[int]]:
    """Serving's preprocessing and one onnxruntime call per photo.

    Returns the logits, the latencies, and the indices of the photos whose pixels differ
    from the reference pipeline's: deliberately corrected ones, and unexplained ones.
    """
    logits: list[np.ndarray] = []
    latencies: list[float] = []
    corrected: list[int] = []
    unexplained: list[int] = []
    pairs = enumerate(zip(photos, reference, strict=True))
    for i, (photo, ref) in progress(pairs, "serving path", total=len(photos)):
        x = preprocessing.preprocess(photo.path.read_bytes(), size)
        if not np.array_equal(x[0], ref):
            (corrected if _deliberately_corrected(photo.path) else unexplained).append(i)
        clock = time.perf_counter()
        logits.append(session.run([OUTPUT], {INPUT_NAME: x})[0][0])
        latencies.append(time.perf_counter() - clock)
    return np.stack(logits).astype(np.float32), latencies, corrected, unexplained


def _deliberately_corrected(path: Path) -> bool:
    """Whether serving's preprocessing corrects ``load_img`` on this file on purpose."""
    with Image.open(path) as image:
        return bool(preprocessing.corrections(image))
