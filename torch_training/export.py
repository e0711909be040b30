"""A PyTorch checkpoint to the ONNX model the Lambda serves, verified, with its int8 variant.

The export follows the Keras path's contract exactly, so ``lambda_function`` serves it
unchanged: one NHWC float32 input ``input`` (dynamic batch), one output ``logits``,
opset 17 (the legacy TorchScript exporter; the dynamo exporter cannot write 17 for a
graph with Pad), and the :class:`ModelMetadata` written by ``convert``'s own
:func:`attach_metadata`. Before the file is renamed into place, onnxruntime must match
PyTorch on every validation photo with ``convert``'s tolerance and top-1 rule, once in
batches and once one photo at a time as the Lambda runs it. The int8 variant is
``convert``'s static QDQ quantisation, accepted within one point of fp32's accuracy.
``serve.onnx`` beside the output is the model to ship: int8 if accepted, else fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convert.evaluate import POOLED, compare_to, load_eval_sets, score
from convert.images import Photo, labelled_split, spread_sample
from convert.metadata import attach_metadata
from convert.quantize import MAX_ACCURACY_DROP, int8_accepted, quantize_int8
from convert.to_onnx import BATCH_DIM, INPUT_NAME, OPSET
from convert.verify import TOLERANCE, compare, onnx_logits, open_session, session_metadata
from lambda_function import preprocessing
from lambda_function.model_metadata import OUTPUT as OUTPUT_NAME
from lambda_function.model_metadata import ModelMetadata
from torch_training.model import Classifier, ServedModel

SERVE_NAME = "serve.onnx"
_FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


class ExportError(Exception):
    """The export does not answer like the PyTorch model; nothing was put in place."""


def to_onnx(model: Classifier, image_size: int, path: Path, opset: int = OPSET) -> None:
    """Export ``model`` for NHWC input ``(batch, size, size, 3)`` with the legacy exporter."""
    served = ServedModel(model).eval()
    quiet_export(served, torch.zeros(1, image_size, image_size, 3), path, opset)


def quiet_export(module: torch.nn.Module, dummy: torch.Tensor, path: Path, opset: int = OPSET):
    """``torch.onnx.export``: legacy exporter, ``input``/``logits``, dynamic batch."""
    with warnings.catch_warnings():
        # The legacy exporter is deprecated; the pools' padding comes from the static
        # spatial size (fixed by the contract), which the tracer warns about.
        warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
        )


def make_metadata(record: dict, checkpoint: Path, opset: int) -> ModelMetadata:
    """The contract of a model exported from ``checkpoint`` (same fields as ``convert``'s)."""
    with checkpoint.open("rb") as stream:
        sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
    versions = {"framework": "pytorch", "opset": str(opset)}
    for name in ("torch", "onnx", "onnxruntime"):
        versions[name] = importlib_metadata.version(name)
    return ModelMetadata(
        labels=tuple(record["labels"]),
        image_size=int(record["image_size"]),
        checkpoint_sha256=sha256,
        val_accuracy=record.get("val_accuracy"),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=versions,
    )


def write_model(model: Classifier, meta: ModelMetadata, path: Path, opset: int = OPSET) -> None:
    """Export ``model`` to ``path`` with ``meta`` in its ``metadata_props``."""
    import onnx

    to_onnx(model, meta.image_size, path, opset)
    proto = onnx.load(str(path))
    meta = _with_file_opset(meta, proto)
    attach_metadata(proto, meta)
    onnx.save(proto, str(path))


def nonfinite_constants(proto) -> list[str]:
    """Names of initializers and constants holding inf or NaN (they wreck int8 ranges)."""
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in proto.graph.initializer]
    for node in proto.graph.node:
        tensors += [(node.output[0], a.t) for a in node.attribute if a.HasField("t")]
    return [
        name
        for name, tensor in tensors
        if tensor.data_type in _FLOAT_TYPES and not np.isfinite(numpy_helper.to_array(tensor)).all()
    ]


def verify(
    path: Path,
    model: Classifier,
    photos: Sequence[Photo],
    names: Sequence[str],
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """onnxruntime vs PyTorch on ``photos``: in batches, and one photo at a time."""
    import onnx

    infinite = nonfinite_constants(onnx.load(str(path)))
    if infinite:
        raise ExportError(
            f"{path}: expected finite constants (int8 calibration needs them). "
            f"Received inf/NaN in: {', '.join(infinite)}"
        )
    session = open_session(path)
    meta = session_metadata(session)
    _check_signature(session, meta, path)
    size = meta.image_size
    x = preprocessing.preprocess_batch([p.path.read_bytes() for p in photos], size)
    expected = torch_logits(model, x)
    batched = compare(expected, onnx_logits(session, x), names, tolerance)
    one_by_one = np.concatenate(
        [
            session.run(
                [OUTPUT_NAME], {INPUT_NAME: preprocessing.preprocess(p.path.read_bytes(), size)}
            )[0]
            for p in photos
        ]
    )
    served = compare(expected, one_by_one, names, tolerance)
    return {
        "passed": batched.passed and served.passed,
        "parity": batched.to_dict(),
        "user_path": served.to_dict(),
    }


def torch_logits(model: Classifier, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """PyTorch logits for NHWC inputs ``x`` (eval mode, no gradients)."""
    served = ServedModel(model).eval()
    with torch.inference_mode():
        chunks = [
            served(torch.from_numpy(x[i : i + batch_size])).numpy()
            for i in range(0, len(x), batch_size)
        ]
    return np.concatenate(chunks).astype(np.float32)


def export(
    model: Classifier,
    record: dict,
    checkpoint: Path,
    output: Path,
    data_dir: Path,
    *,
    limit: int | None = None,
    int8: bool = False,
    calibration_images: int = 200,
    eval_limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Export, verify on the validation split and place ``output``; optionally int8.

    Returns the report (also written as ``report.json`` beside ``output``).
    """
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    labels = tuple(record["labels"])
    meta = make_metadata(record, checkpoint, OPSET)
    photos = spread_sample(labelled_split(data_dir, "validation", labels), limit, seed)
    names = [str(p.path.relative_to(data_dir)) for p in photos]
    report: dict[str, Any] = {"model": str(output), "checkpoint": str(checkpoint)}
    with _staged(output) as staged:
        clock = time.perf_counter()
        write_model(model, meta, staged)
        report["export_s"] = time.perf_counter() - clock
        _log(f"verifying {staged.name} on {len(photos)} validation photos against PyTorch")
        report["verification"] = verify(staged, model, photos, names)
        report["size_bytes"] = staged.stat().st_size
        if not report["verification"]["passed"]:
            _write_report(output, report)
            raise ExportError(
                f"onnxruntime does not match PyTorch (tolerance {TOLERANCE:g}, same top-1 on "
                f"every photo), so {output} was not written. Details: {_report_path(output)}"
            )
        staged.replace(output)
    shipped = output
    if int8:
        report["int8"] = _int8(output, labels, meta.image_size, data_dir, calibration_images,
                               eval_limit, seed)  # fmt: skip
        if report["int8"]["accepted"]:
            shipped = Path(report["int8"]["path"])
    shutil.copyfile(shipped, output.parent / SERVE_NAME)
    report["serve"] = {"path": str(output.parent / SERVE_NAME), "from": shipped.name}
    report["wall_s"] = time.perf_counter() - started
    _write_report(output, report)
    return report


def _int8(
    fp32: Path,
    labels: tuple[str, ...],
    size: int,
    data_dir: Path,
    calibration_images: int,
    eval_limit: int | None,
    seed: int,
) -> dict[str, Any]:
    """``convert``'s int8 step and acceptance rule, on the export."""
    target = fp32.with_name(f"{fp32.stem}.int8{fp32.suffix}")
    calibration = spread_sample(labelled_split(data_dir, "train", labels), calibration_images, seed)
    splits = {
        s: spread_sample(labelled_split(data_dir, s, labels), eval_limit, seed)
        for s in ("validation", "test")
    }
    eval_sets = load_eval_sets(splits, size)
    baseline = score(fp32, eval_sets)
    with _staged(target) as staged:
        _log(f"quantising to int8 (static QDQ) on {len(calibration)} training photos")
        clock = time.perf_counter()
        quantize_int8(fp32, staged, calibration, size)
        figures = compare_to(baseline, score(staged, eval_sets))
        accepted = all(
            int8_accepted(baseline.accuracy[s], figures["accuracy"][s]) for s in ("test", POOLED)
        )
        result = {
            "size_bytes": staged.stat().st_size,
            "quantize_s": time.perf_counter() - clock,
            "calibration_images": len(calibration),
            **figures,
            "rule": f"accuracy within {MAX_ACCURACY_DROP:.0%} of fp32 on test and {POOLED}",
            "accepted": accepted,
        }
        if accepted:
            staged.replace(target)
    return {"path": str(target) if accepted else None, **result}


def _with_file_opset(meta: ModelMetadata, proto) -> ModelMetadata:
    """The metadata with the opset read from the exported file itself."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ModelMetadata(**{**meta.__dict__, "versions": {**meta.versions, "opset": str(opset)}})


def _check_signature(session, meta: ModelMetadata, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size = meta.image_size
    if [i.name for i in inputs] != [INPUT_NAME] or list(inputs[0].shape[1:]) != [size, size, 3]:
        raise ExportError(
            f"{path}: expected one input {INPUT_NAME!r} of shape (batch, {size}, {size}, 3). "
            f"Received: {[(i.name, i.shape) for i in inputs]}"
        )
    if [o.name for o in outputs] != [OUTPUT_NAME] or outputs[0].shape[1] != len(meta.labels):
        raise ExportError(
            f"{path}: expected one output {OUTPUT_NAME!r} of shape (batch, {len(meta.labels)}). "
            f"Received: {[(o.name, o.shape) for o in outputs]}"
        )


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``; removed on exit unless renamed to ``target``."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    staged = Path(name)
    staged.chmod(0o644)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def _report_path(output: Path) -> Path:
    return output.parent / "report.json"


def _write_report(output: Path, report: dict[str, Any]) -> None:
    _report_path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _log(message: str) -> None:
    print(f"torch_training: {message}", file=sys.stderr, flush=True)
