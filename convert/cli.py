"""``python -m convert``: the best Keras checkpoint becomes a verified ONNX model.

Every successful run also writes ``serve.onnx`` beside the output: the model the
service loads (the int8 variant when ``--int8`` passed its gate, else fp32).

Exit codes: 0 converted and verified; 1 a model failed verification (nothing new is
left at its path); 2 bad input (missing or malformed file, wrong model, unwritable
output, bad option).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from convert.errors import ConvertError, VerificationError
from convert.pipeline import SERVE_NAME, Options, run
from convert.report import Report
from convert.to_onnx import OPSET, SUPPORTED_OPSETS
from convert.verify import TOLERANCE
from lambda_function.model_metadata import OUTPUT
from training.tf_logs import TF_LOG_HELP, quiet_tensorflow

EPILOG = """\
examples:
  python -m convert              # artifacts/training -> artifacts/model/{model,serve}.onnx
  python -m convert best.h5 --labels labels.txt     # a bare .h5: one class name a line
  python -m convert --int8       # also model.int8.onnx; serve.onnx is it when it passes
  python -m convert --optimize   # also model.optimized.onnx (ORT_ENABLE_EXTENDED)
  python -m convert artifacts/training --images my_photos/ --limit 50
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, convert, print a summary; returns the exit code."""
    options = parse_args(argv)
    if not options.tf_log:
        quiet_tensorflow()
    try:
        report = run(options)
    except ConvertError as exc:
        print(f"convert: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except VerificationError as exc:
        print(f"convert: FAILED: {exc}", file=sys.stderr)
        return exc.exit_code
    print(summary(report, options))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The command line as :class:`Options` (argparse exits with code 2 on bad options)."""
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("limit", "calibration_images", "eval_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    if not args.tolerance > 0:
        parser.error(f"--tolerance must be > 0. Received: {args.tolerance}")
    return Options(
        source=args.source,
        output=args.output,
        report=args.report,
        labels=_labels(args.labels, parser) if args.labels else None,
        run=args.run,
        opset=args.opset,
        data_dir=args.data_dir,
        split=args.split,
        images=tuple(args.images or ()),
        limit=args.limit,
        tolerance=args.tolerance,
        optimize=args.optimize,
        int8=args.int8,
        per_channel=not args.per_tensor,
        calibration_images=args.calibration_images,
        eval_limit=args.eval_limit,
        seed=args.seed,
        tf_log=args.tf_log,
    )


def summary(report: Report, options: Options) -> str:
    """A few lines a person reads after the run."""
    verification = report.verification
    if verification is None:  # run() raises before returning such a report
        raise ValueError("Expected a verified report. Received one without verification")
    parity, user = verification.parity, verification.user_path
    size = report.checkpoint.image_size
    lines = [
        f"model: {report.model} ({report.sizes_bytes['onnx'] / 1e6:.1f} MB, opset "
        f"{report.opset}, input (batch, {size}, {size}, 3), "
        f"{len(report.checkpoint.labels)} labels)",
        f"parity (Keras vs onnxruntime, {parity.n_images} photos): max |Δ logits| "
        f"{parity.max_abs_diff:.2g}, mean {parity.mean_abs_diff:.2g}, top-1 agreement "
        f"{parity.top1_agreement:.1%}",
        f"serving path ({user.n_images} photos): max |Δ logits| {user.max_abs_diff:.2g}, "
        f"top-1 agreement {user.top1_agreement:.1%}",
    ]
    for name, variant in report.variants.items():
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in variant["accuracy"].items())
        state = "" if name == "fp32" else (" accepted" if variant["accepted"] else " REJECTED")
        lines.append(
            f"{name}: {variant['size_bytes'] / 1e6:.1f} MB, accuracy {accuracy}{state}"
            + (f" -> {variant['path']}" if variant.get("path") and name != "fp32" else "")
        )
    if report.served is not None:
        lines.append(f"served: {report.served.path} ({report.served.variant})")
    lines.append(f"report: {options.report_path}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description=(
            "Convert the best Keras checkpoint to ONNX (input 'input' NHWC float32, dynamic "
            f"batch; output {OUTPUT!r}), store labels, size and preprocessing in its metadata, "
            "and verify it against Keras on real photos before it is put in place."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "source",
        nargs="?",
        type=Path,
        default=Options.source,
        help="a training output folder (its manifest.json picks the run: best_run, else the "
        "highest best_val_accuracy), a manifest.json, or a Keras .h5 file "
        "(default: %(default)s)",
    )
    add(
        "-o",
        "--output",
        type=Path,
        default=Options.output,
        help="ONNX file to write; {SERVE_NAME} (the model to serve) goes beside it "
        "(default: %(default)s)",
    )
    add("--report", type=Path, help="JSON report path (default: report.json beside the model)")
    add(
        "--labels",
        help="class names in the model's output order, comma-separated or a "
        "file with one per line; needed for a bare .h5 that no manifest describes",
    )
    add("--run", help="convert this manifest run instead of the best one")
    add(
        "--opset",
        type=int,
        default=OPSET,
        choices=SUPPORTED_OPSETS,
        metavar="N",
        help=f"ONNX opset, {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} "
        "(default: %(default)s)",
    )
    data = parser.add_argument_group("verification")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", Options.data_dir)),
        help="dataset root with train/, validation/, test/ (default: $DATA_DIR or %(default)s)",
    )
    data.add_argument(
        "--split", default=Options.split, help="dataset split to verify on (default: %(default)s)"
    )
    data.add_argument(
        "--images",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="verify on these image files or folders instead of the split",
    )
    data.add_argument(
        "--limit",
        type=int,
        help="verify on at most N photos, drawn from every class (default: all)",
    )
    data.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help="largest accepted |Δ logit| between Keras and onnxruntime "
        "(default: %(default)g); the top-1 class must agree on every photo",
    )
    variants = parser.add_argument_group("variants")
    variants.add_argument(
        "--optimize",
        action="store_true",
        help="also write <stem>.optimized.onnx beside it, the graph optimised at "
        "ORT_ENABLE_EXTENDED (portable), checked against Keras",
    )
    variants.add_argument(
        "--int8",
        action="store_true",
        help="also write <stem>.int8.onnx beside it, by static QDQ quantisation, "
        f"kept only if its accuracy is within 1 point of fp32's; {SERVE_NAME} is then int8",
    )
    variants.add_argument(
        "--per-tensor",
        action="store_true",
        help="int8: one weight scale per tensor instead of per channel",
    )
    variants.add_argument(
        "--calibration-images",
        type=int,
        default=Options.calibration_images,
        metavar="N",
        help="int8: training photos to calibrate on (default: %(default)s)",
    )
    variants.add_argument(
        "--eval-limit",
        type=int,
        metavar="N",
        help="score variants on at most N photos per split (default: all of validation and test)",
    )
    add(
        "--seed",
        type=int,
        default=Options.seed,
        help="seed of the photo samples (default: %(default)s)",
    )
    add("--tf-log", action="store_true", help=TF_LOG_HELP)
    return parser


def _labels(value: str, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    path = Path(value)
    if path.is_file():
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        labels = [part.strip() for part in value.split(",")]
    labels = [label for label in labels if label]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        parser.error(f"--labels must name at least two distinct classes. Received: {labels}")
    return tuple(labels)
