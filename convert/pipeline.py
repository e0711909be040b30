"""The whole conversion: checkpoint -> ONNX with metadata -> verified -> in place -> served.

Every model file is written under a temporary name in the output folder and renamed
into place (atomically) only once it has passed its checks, so the output path only
ever holds a verified model: a failed run leaves no new model there.

Every successful run also writes the one file the service loads, ``serve.onnx`` beside
the output: the int8 variant when it was asked for and passed its gate, the fp32 model
otherwise. Variants left by an older run are removed as soon as the new fp32 model is in
place, so nothing from an older checkpoint is ever served. ``report.json`` says which
variant ``serve.onnx`` is.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.catalogue import add_distance
from convert.checkpoint import LoadedCheckpoint, find_checkpoint
from convert.errors import ConvertError, VerificationError
from convert.evaluate import POOLED, Scores, compare_to, load_eval_sets, score
from convert.images import Photo, collect_images, labelled_split, spread_sample
from convert.keras_model import load_checked_model
from convert.known import CANDIDATES_PER_CLASS, KNOWN_NAME, remove_known_set, write_known_set
from convert.metadata import attach_metadata, file_opset, make_metadata
from convert.quantize import MAX_ACCURACY_DROP, int8_accepted, quantize_int8, save_optimized
from convert.report import Report, Served
from convert.runtime import onnx_logits, open_session
from convert.source import Source
from convert.to_onnx import OPSET, keras_to_onnx
from convert.verify import TOLERANCE, Verification, compare, keras_logits, verify_model
from lambda_function import files
from lambda_function.model_metadata import ModelMetadataError

if TYPE_CHECKING:
    import onnx

SERVE_NAME = "serve.onnx"
"""The one model file the service loads, written beside the output by every run."""

VARIANTS = ("optimized", "int8")


@dataclass(frozen=True)
class Options:
    """What to convert, where to, and how to check it (see ``python -m convert --help``)."""

    source: Path = Path("artifacts/training")
    output: Path = Path("artifacts/model/model.onnx")
    report: Path | None = None  # default: report.json beside the output
    labels: tuple[str, ...] | None = None
    run: str | None = None
    opset: int = OPSET
    data_dir: Path = Path("data/clothing-dataset-small")
    split: str = "validation"
    images: tuple[Path, ...] = ()
    limit: int | None = None
    tolerance: float = TOLERANCE
    optimize: bool = False
    int8: bool = False
    per_channel: bool = True
    calibration_images: int = 200
    eval_limit: int | None = None
    seed: int = 0
    tf_log: bool = False  # show TensorFlow's C++ start-up log lines

    @property
    def report_path(self) -> Path:
        return self.report or self.output.parent / "report.json"

    @property
    def serve_path(self) -> Path:
        """Where the served model goes: ``serve.onnx`` beside the output."""
        return self.output.with_name(SERVE_NAME)

    @property
    def known_dir(self) -> Path:
        """The served model's known-answer set (docs/deployment.md): ``known/`` beside it."""
        return self.output.with_name(KNOWN_NAME)

    def variant_path(self, name: str) -> Path:
        return self.output.with_name(f"{self.output.stem}.{name}{self.output.suffix}")


def run(options: Options, load: Callable[[Options], Source] | None = None) -> Report:
    """Convert, verify, derive the variants asked for, and place ``serve.onnx``.

    ``load`` gives the checkpoint to convert, its exporter and its reference (see
    :mod:`convert.source`): :func:`keras_source` by default. Raises :class:`ConvertError`
    for bad input and :class:`VerificationError` when a model fails its checks (the report
    is written either way).
    """
    started = time.perf_counter()
    if options.output.name == SERVE_NAME:
        raise ConvertError(
            f"{options.output}: expected an output named other than {SERVE_NAME}, which every "
            "run writes beside the output as the served copy"
        )
    for path in (options.output, options.report_path, options.serve_path):
        _check_writable(path)  # before the slow loading
    source = (load or keras_source)(options)
    loaded = source.checkpoint
    photos = _verification_photos(options, loaded)
    _log(f"converting {loaded.path} (size {loaded.image_size}, opset {options.opset})")
    clock = time.perf_counter()
    proto = _convert(source, options.opset)
    opset = file_opset(proto)
    report = Report(
        model=options.output,
        checkpoint=loaded,
        opset=opset,
        sizes_bytes={loaded.path.suffix.lstrip(".") or "checkpoint": loaded.path.stat().st_size},
        timings_s={"load": source.load_s, "convert": time.perf_counter() - clock},
    )
    verification, onnx_size = _verify_and_place(proto, source, photos, options)
    framework, release = source.framework, source.release
    del source, proto
    release()
    report = replace(
        report,
        verification=verification,
        sizes_bytes={**report.sizes_bytes, "onnx": onnx_size},
    )
    if not verification.passed:
        _write_report(options.report_path, report)
        raise VerificationError(_failure_message(verification, options, framework))
    _remove_older_variants(options)
    variants = _variants(options, loaded, verification)
    report = replace(report, variants=variants, served=_serve(options, variants))
    _known_set(options, loaded)
    report = replace(report, wall_s=time.perf_counter() - started)
    _write_report(options.report_path, report)
    if report.rejected:
        raise VerificationError(
            f"variant(s) {', '.join(report.rejected)} rejected (see {options.report_path}); "
            f"{options.output} itself passed and is in place, and {options.serve_path} serves it"
        )
    return report


def keras_source(options: Options) -> Source:
    """The Keras checkpoint ``options`` name: tf2onnx exports it, ``model.predict`` is the
    reference, on Keras' own ``load_img`` inputs."""
    checkpoint = find_checkpoint(options.source, labels=options.labels, run=options.run)
    clock = time.perf_counter()
    model, loaded = load_checked_model(checkpoint)
    return Source(
        checkpoint=loaded,
        export=partial(keras_to_onnx, model, loaded.image_size),
        reference=partial(keras_logits, model),
        release=_release_tensorflow,
        load_s=time.perf_counter() - clock,
    )


def _convert(source: Source, opset: int) -> onnx.ModelProto:
    """The ONNX graph with the checkpoint's contract in its metadata.

    The opset recorded is the one in the file: an exporter may write another than asked.
    """
    checkpoint = source.checkpoint
    proto = source.export(opset)
    if checkpoint.catalogue is not None:
        from training.catalogue import Catalogue

        add_distance(proto, Catalogue.load(checkpoint.catalogue))
    try:
        metadata = make_metadata(checkpoint, file_opset(proto), libraries=source.libraries)
    except ModelMetadataError as exc:
        raise ConvertError(f"{checkpoint.manifest or checkpoint.path}: {exc}") from exc
    attach_metadata(proto, metadata)
    return proto


def _verify_and_place(
    proto: onnx.ModelProto, source: Source, photos: list[Photo], options: Options
) -> tuple[Verification, int]:
    """Write ``proto`` beside the output, verify it, and rename it into place if it passed.

    Returns the verification and the file's size in bytes.
    """
    import onnx

    with files.staged(options.output) as staged:
        onnx.save(proto, str(staged))
        _log(
            f"verifying on {len(photos)} photos ({source.framework} vs onnxruntime, "
            "and the serving path)"
        )
        names = [_display(p.path, options.data_dir) for p in photos]
        verification = verify_model(
            staged,
            source.reference,
            photos,
            names=names,
            tolerance=options.tolerance,
            inputs=source.inputs,
            keep_inputs=options.optimize,  # the optimised variant is checked against the reference
        )
        size = staged.stat().st_size
        if verification.passed:
            staged.replace(options.output)
    return verification, size


def _release_tensorflow() -> None:
    """Free the Keras model and TensorFlow's graphs before the onnxruntime stages."""
    import keras

    keras.backend.clear_session()
    gc.collect()
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Give the heap memory freed so far back to the OS (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator decides
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _remove_older_variants(options: Options) -> None:
    """Variants beside the output come from an older checkpoint now: remove them."""
    for name in VARIANTS:
        options.variant_path(name).unlink(missing_ok=True)


def _serve(options: Options, variants: dict[str, dict[str, Any]]) -> Served:
    """Copy the model to serve to ``serve.onnx``: int8 if accepted, else fp32."""
    int8 = variants.get("int8", {})
    variant, source = (
        ("int8", Path(int8["path"])) if int8.get("accepted") else ("fp32", options.output)
    )
    files.write_atomic(options.serve_path, lambda staged: shutil.copyfile(source, staged))
    _log(f"serving {variant}: {options.serve_path}")
    return Served(variant, options.serve_path, source, files.sha256_file(options.serve_path))


def _variants(
    options: Options, checkpoint: LoadedCheckpoint, verification: Verification
) -> dict[str, dict[str, Any]]:
    """Build, check and place each variant asked for; fp32 is scored as the baseline."""
    if not (options.optimize or options.int8):
        return {}
    splits = {
        split: spread_sample(
            labelled_split(options.data_dir, split, checkpoint.labels),
            options.eval_limit,
            options.seed,
        )
        for split in ("validation", "test")
    }
    _log(f"scoring fp32 on {sum(map(len, splits.values()))} labelled photos")
    eval_sets = load_eval_sets(splits, checkpoint.image_size)
    baseline = score(options.output, eval_sets)
    variants: dict[str, Any] = {
        "fp32": {
            "path": str(options.output),
            "size_bytes": options.output.stat().st_size,
            "accuracy": dict(baseline.accuracy),
            "eval_images": {name: len(s.photos) for name, s in eval_sets.items()},
        }
    }
    if options.optimize:
        variants["optimized"] = _optimized_variant(options, verification, baseline, eval_sets)
    if options.int8:
        variants["int8"] = _int8_variant(options, checkpoint, baseline, eval_sets)
    return variants


def _optimized_variant(
    options: Options, verification: Verification, baseline: Scores, eval_sets: dict
) -> dict[str, Any]:
    """The graph optimised offline: accepted if it still matches Keras within tolerance."""
    target = options.variant_path("optimized")
    with files.staged(target) as staged:
        _log("saving the graph optimised at ORT_ENABLE_EXTENDED")
        save_optimized(options.output, staged)
        parity = compare(
            verification.keras_logits,
            onnx_logits(open_session(staged), verification.inputs),
            verification.names,
            options.tolerance,
        )
        result = {
            "size_bytes": staged.stat().st_size,
            **compare_to(baseline, score(staged, eval_sets)),
            "parity_with_keras": parity.to_dict(),
            "accepted": parity.passed,
        }
        if parity.passed:
            staged.replace(target)
    return {"path": str(target) if parity.passed else None, **result}


def _int8_variant(
    options: Options, checkpoint: LoadedCheckpoint, baseline: Scores, eval_sets: dict
) -> dict[str, Any]:
    """Static QDQ int8: accepted within one accuracy point of fp32 on test and on all."""
    target = options.variant_path("int8")
    calibration = spread_sample(
        labelled_split(options.data_dir, "train", checkpoint.labels),
        options.calibration_images,
        options.seed,
    )
    with files.staged(target) as staged:
        _log(f"quantising to int8 (static QDQ), calibrated on {len(calibration)} training photos")
        clock = time.perf_counter()
        quantize_int8(
            options.output,
            staged,
            calibration,
            checkpoint.image_size,
            per_channel=options.per_channel,
        )
        quantize_s = time.perf_counter() - clock
        figures = compare_to(baseline, score(staged, eval_sets))
        accepted = all(
            int8_accepted(baseline.accuracy[split], figures["accuracy"][split])
            for split in ("test", POOLED)
        )
        result = {
            "size_bytes": staged.stat().st_size,
            **figures,
            "quantize_s": quantize_s,
            "calibration_images": len(calibration),
            "per_channel": options.per_channel,
            "rule": f"accuracy within {MAX_ACCURACY_DROP:.0%} of fp32 on test and {POOLED}",
            "accepted": accepted,
        }
        if accepted:
            staged.replace(target)
    return {"path": str(target) if accepted else None, **result}


def _known_set(options: Options, checkpoint: LoadedCheckpoint) -> None:
    """Write the served model's known-answer set from the validation split.

    Without a labelled validation split there is no set (the image build then stops at the
    Dockerfile's COPY of it): an older set is removed, never left beside a new model.
    """
    remove_known_set(options.known_dir)
    try:
        photos = labelled_split(options.data_dir, "validation", checkpoint.labels)
    except ConvertError as exc:
        _log(f"no known-answer set ({exc}); the image cannot be built without one")
        return
    candidates = spread_sample(photos, CANDIDATES_PER_CLASS * len(checkpoint.labels), options.seed)
    try:
        kept = write_known_set(options.serve_path, candidates, options.known_dir)
    except ConvertError as exc:
        _log(f"no known-answer set: {exc}; the image cannot be built without one")
        return
    _log(f"known-answer set: {len(kept)} photos -> {options.known_dir}")


def _verification_photos(options: Options, checkpoint: LoadedCheckpoint) -> list[Photo]:
    """The user's photos if given, else the dataset split; sampled to ``limit``."""
    if options.images:
        photos = collect_images(options.images)
    else:
        photos = labelled_split(options.data_dir, options.split, checkpoint.labels)
    return spread_sample(photos, options.limit, options.seed)


def _check_writable(path: Path) -> None:
    """Fail early, before the slow work, when ``path`` cannot be written."""
    if path.is_dir():
        raise ConvertError(f"{path}: is a folder. Expected the path of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise ConvertError(
            f"{path}: cannot write there ({exc.strerror or exc}). Expected a writable folder"
        ) from exc


def _write_report(path: Path, report: Report) -> None:
    files.write_text_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")


def _failure_message(verification: Verification, options: Options, framework: str) -> str:
    parity, user = verification.parity, verification.user_path
    return (
        f"verification failed, so {options.output} was not written. {framework} vs onnxruntime: "
        f"max |Δ logits| {parity.max_abs_diff:.3g} (tolerance {options.tolerance:g}), "
        f"top-1 agreement {parity.top1_agreement:.1%}; serving path: max |Δ| "
        f"{user.max_abs_diff:.3g}, top-1 agreement {user.top1_agreement:.1%}, "
        f"{len(verification.preprocessing_mismatch)} photos with unexplained pixel differences. "
        f"Details: {options.report_path}"
    )


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _log(message: str) -> None:
    print(f"convert: {message}", file=sys.stderr, flush=True)
