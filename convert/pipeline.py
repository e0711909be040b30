"""The whole conversion: checkpoint -> ONNX with metadata -> verified -> in place.

Every model file is written under a temporary name in the output folder and renamed
into place (atomically) only once it has passed its checks, so the output path only
ever holds a verified model: a failed run leaves no new model there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.checkpoint import Checkpoint, LoadedCheckpoint, find_checkpoint
from convert.errors import ConvertError, VerificationError
from convert.evaluate import POOLED, Scores, compare_to, load_eval_sets, score
from convert.images import Photo, collect_images, labelled_split, spread_sample
from convert.keras_model import load_checked_model
from convert.metadata import attach_metadata, make_metadata
from convert.quantize import MAX_ACCURACY_DROP, int8_accepted, quantize_int8, save_optimized
from convert.to_onnx import OPSET, keras_to_onnx
from convert.verify import (
    TOLERANCE,
    Verification,
    compare,
    onnx_logits,
    open_session,
    verify_model,
)
from lambda_function.model_metadata import ModelMetadataError

if TYPE_CHECKING:
    import onnx


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

    def variant_path(self, name: str) -> Path:
        return self.output.with_name(f"{self.output.stem}.{name}{self.output.suffix}")


def run(options: Options) -> dict[str, Any]:
    """Convert, verify and (if asked) derive the variants; returns the report.

    Raises :class:`ConvertError` for bad input and :class:`VerificationError` when a
    model fails its checks (the report is written either way).
    """
    started = time.perf_counter()
    found = find_checkpoint(options.source, labels=options.labels, run=options.run)
    _check_writable(options.output)
    _check_writable(options.report_path)
    clock = time.perf_counter()
    model, checkpoint = load_checked_model(found)
    load_s = time.perf_counter() - clock
    photos = _verification_photos(options, checkpoint)
    _log(f"converting {checkpoint.path} (size {checkpoint.image_size}, opset {options.opset})")
    clock = time.perf_counter()
    proto = _convert(model, checkpoint, options.opset)
    report = _base_report(options, checkpoint, load_s, time.perf_counter() - clock)
    verification = _verify_and_place(proto, model, photos, options, report)
    report["variants"] = _variants(options, checkpoint, verification)
    report["passed"] = all(v.get("accepted", True) for v in report["variants"].values())
    report["wall_s"] = time.perf_counter() - started
    _write_report(options.report_path, report)
    rejected = [k for k, v in report["variants"].items() if not v.get("accepted", True)]
    if rejected:
        raise VerificationError(
            f"variant(s) {', '.join(rejected)} rejected (see {options.report_path}); "
            f"{options.output} itself passed and is in place"
        )
    return report


def _convert(model: Any, checkpoint: LoadedCheckpoint, opset: int) -> onnx.ModelProto:
    """The ONNX graph with the checkpoint's contract in its metadata."""
    try:
        metadata = make_metadata(checkpoint, opset)
    except ModelMetadataError as exc:
        raise ConvertError(f"{checkpoint.manifest or checkpoint.path}: {exc}") from exc
    proto = keras_to_onnx(model, checkpoint.image_size, opset)
    attach_metadata(proto, metadata)
    return proto


def _verify_and_place(
    proto: onnx.ModelProto,
    model: Any,
    photos: list[Photo],
    options: Options,
    report: dict[str, Any],
) -> Verification:
    """Write ``proto`` beside the output, verify it, and rename it into place if it passed."""
    import onnx

    with _staged(options.output) as staged:
        onnx.save(proto, str(staged))
        _log(f"verifying on {len(photos)} photos (Keras vs onnxruntime, and the serving path)")
        names = [_display(p.path, options.data_dir) for p in photos]
        verification = verify_model(staged, model, photos, names=names, tolerance=options.tolerance)
        report["verification"] = verification.to_dict()
        report["sizes_bytes"]["onnx"] = staged.stat().st_size
        if not verification.passed:
            report["passed"] = False
            _write_report(options.report_path, report)
            raise VerificationError(_failure_message(verification.to_dict(), options))
        staged.replace(options.output)
    return verification


def _variants(
    options: Options, checkpoint: LoadedCheckpoint, verification: Verification
) -> dict[str, Any]:
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
    with _staged(target) as staged:
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
    with _staged(target) as staged:
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


def _verification_photos(options: Options, checkpoint: Checkpoint) -> list[Photo]:
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


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``; removed on exit unless renamed to ``target``."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    staged = Path(name)
    staged.chmod(0o644)  # mkstemp's 0600 would hide the model from the Lambda's user
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def _write_report(path: Path, report: dict[str, Any]) -> None:
    with _staged(path) as staged:
        staged.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        staged.replace(path)


def _base_report(
    options: Options, checkpoint: Checkpoint, load_s: float, convert_s: float
) -> dict[str, Any]:
    return {
        "passed": None,
        "model": str(options.output),
        "checkpoint": {
            "path": str(checkpoint.path),
            "sha256": checkpoint.sha256,
            "run": checkpoint.run,
            "manifest": str(checkpoint.manifest) if checkpoint.manifest else None,
            "val_accuracy": checkpoint.val_accuracy,
        },
        "labels": list(checkpoint.labels),
        "image_size": checkpoint.image_size,
        "opset": options.opset,
        "sizes_bytes": {"h5": checkpoint.path.stat().st_size},
        "timings_s": {"load_keras": load_s, "convert": convert_s},
    }


def _failure_message(verification: dict[str, Any], options: Options) -> str:
    parity, user = verification["parity"], verification["user_path"]
    return (
        f"verification failed, so {options.output} was not written. Keras vs onnxruntime: "
        f"max |Δ logits| {parity['max_abs_diff']:.3g} (tolerance {options.tolerance:g}), "
        f"top-1 agreement {parity['top1_agreement']:.1%}; serving path: max |Δ| "
        f"{user['max_abs_diff']:.3g}, top-1 agreement {user['top1_agreement']:.1%}, "
        f"{len(user['preprocessing_mismatch'])} photos with unexplained pixel differences. "
        f"Details: {options.report_path}"
    )


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _log(message: str) -> None:
    print(f"convert: {message}", file=sys.stderr, flush=True)
