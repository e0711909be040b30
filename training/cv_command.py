"""Cross-validate methods over every labelled photo, report, and (``--ship``) train the final model.

Shipping trains the chosen method on *every* labelled photo for the epoch count
cross-validation chose, puts it on the frozen base as a complete ``.h5`` model, and
records it in the training folder's manifest as ``best_run`` together with the
calibration fitted on the out-of-fold predictions (temperature, confidence threshold),
which ``python -m convert`` writes into the ONNX metadata.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training import config
from training.methods import HEAD_ONLY, METHODS, Method, method

DEFAULT_METHODS = HEAD_ONLY
DESCRIPTION = __doc__
SHIP_SEED = 1  # the final model's initialisation, whatever --seed dealt the folds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training cv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``cv`` command's options (shared with ``python -m training``'s parser)."""
    config.add_common(p)
    p.add_argument(
        "--extra-data",
        type=Path,
        default=None,
        help="extra labelled photos (python -m training field-export): pooled with the "
        "dataset, each product's photos kept in one fold",
    )
    p.add_argument("--output-dir", type=Path, default=config.CV_DIR, help="report folder")
    p.add_argument("--k", type=int, default=5, help="folds (default: %(default)s)")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated, from: "
        + ", ".join(METHODS)
        + " (default: the head-only ones; fine-tuning takes ~12 min per fold on 2 cores)",
    )
    p.add_argument("--reference", default="today", help="the method gains are measured against")
    p.add_argument(
        "--ship",
        type=Path,
        default=None,
        metavar="TRAINING_DIR",
        help="train the chosen method on all photos and record it as best_run there "
        "(e.g. artifacts/training), with its calibration, for `python -m convert`",
    )
    p.add_argument("--ship-method", default=None, help="ship this method instead of the chosen one")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.cv_command`` (the same as ``python -m training cv``)."""
    args = build_parser().parse_args(argv)
    return run(args, ["cv", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Cross-validate, write the report, ship if asked; ``argv`` is recorded as the command."""
    from training import calibration, cv, cv_report, data, engine

    try:
        methods = [method(name) for name in args.methods.split(",") if name.strip()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = [m.name for m in methods]
    if args.ship_method is not None and args.ship_method not in names:
        print(
            f"error: Expected --ship-method among --methods {', '.join(names)}. "
            f"Received: {args.ship_method!r}",
            file=sys.stderr,
        )
        return 2
    dataset = data.scan(args.data_dir, extra=args.extra_data)
    weights = config.weights(args.weights)
    started = time.perf_counter()
    by_input, targets = engine.inputs(methods, dataset, args.image_size, weights, args.cache_dir)
    print(f"inputs of {len(targets)} photos: {', '.join(by_input)}", flush=True)
    rows, results, fold = cv.run(
        methods,
        by_input,
        targets,
        k=args.k,
        seed=args.seed,
        n_classes=len(dataset.labels),
        reference=args.reference,
        cache_dir=args.output_dir / "folds",
        base=engine.fresh_base(args.image_size, weights),
        groups=_groups(dataset) if args.extra_data is not None else None,
    )
    if args.reference in results:
        chosen = cv.choose(rows, args.reference)
    else:  # nothing to compare with: the most accurate method of those run
        for row in rows:
            row.update(kept=False, gain_vs_reference=None, gain_ci=(0.0, 0.0))
        chosen = max(rows, key=lambda r: r["accuracy"])["method"]
    chosen = args.ship_method or chosen
    report = {
        "command": "python -m training " + shlex.join(sys.argv[1:] if argv is None else argv),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "k": args.k,
        "seed": args.seed,
        "image_size": args.image_size,
        "n_photos": len(targets),
        "labels": list(dataset.labels),
        "fingerprint": {"data": dataset.fingerprint},
        "reference": args.reference,
        "chosen": chosen,
        "seconds": round(time.perf_counter() - started, 1),
        "methods": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        np.save(args.output_dir / f"oof-{name}.npy", result.oof_logits)
        row = next(r for r in rows if r["method"] == name)
        for kind, probs in (
            ("raw", calibration.softmax(result.oof_logits)),
            ("calibrated", cv.cross_fitted_temperature(result.oof_logits, targets, fold)[0]),
        ):
            cv_report.reliability_diagram(
                probs,
                targets,
                args.output_dir / f"reliability-{name}-{kind}.png",
                f"{name} ({kind}), out-of-fold, {len(targets)} photos",
            )
        row["reliability_png"] = f"reliability-{name}-calibrated.png"
    np.save(args.output_dir / "folds.npy", fold)
    paths = cv_report.write(report, args.output_dir)
    print(paths["md"].read_text(), flush=True)
    if args.ship is not None:
        row = next(r for r in rows if r["method"] == chosen)
        ship(
            METHODS[chosen], row, by_input, targets, dataset, args, results[chosen].oof_logits, fold
        )
    return 0


def ship(
    method: Method,
    row: dict,
    by_input: dict[str, np.ndarray],
    targets: np.ndarray,
    dataset,
    args: argparse.Namespace,
    oof_logits: np.ndarray | None = None,
    fold: np.ndarray | None = None,
) -> Path:
    """Train ``method`` on every photo, save base + head as ``.h5``, record it as best_run.

    A fine-tuning method keeps its recipe: the head's epoch and the fine-tuning run on a
    held-out 10%, fine-tuned for the median of the folds' best epochs. A head-only method
    also ships the catalogue distance (``training.catalogue``), fitted from ``oof_logits``
    and ``fold``: a fine-tuned base changes the pooled features it describes.
    """
    from training import engine, features, manifest

    epochs = row["epochs"] or int(np.median(row["fold_epochs"]))
    if method.fine_tune:
        final = replace(method, fine_tune_epochs=epochs)
    else:
        final = replace(method, epochs=epochs, inner_holdout=0.0)
    weights = config.weights(args.weights)
    everything = np.arange(len(targets))
    start = time.perf_counter()
    fitted = engine.fit(
        final,
        by_input,
        targets,
        everything,
        everything[:0],
        len(dataset.labels),
        SHIP_SEED,
        engine.fresh_base(args.image_size, weights),
    )
    seconds = time.perf_counter() - start
    name = f"cv_{method.name}_s{args.image_size}_all"
    checkpoint = engine.save(fitted, dataset, args.ship / "runs" / name, epochs, row["accuracy"])
    shipped = final if method.fine_tune else replace(method, epochs=epochs)
    entry = manifest.entry(
        name,
        args.ship,
        checkpoint,
        shipped,
        args.image_size,
        dataset.labels,
        {"data": dataset.fingerprint, "weights": features.weights_fingerprint(weights)},
        best_epoch=epochs,
        # There is no validation split left: the honest figure is the CV estimate.
        best_val_accuracy=row["accuracy"],
        seconds=seconds,
        path=engine.path(shipped) + ", trained on every labelled photo",
        cv={
            key: row[key]
            for key in ("accuracy", "accuracy_ci", "top3", "ece_calibrated", "fold_epochs")
        }
        | {"k": args.k, "seed": args.seed, "report": str(args.output_dir / "cv.json")},
        calibration={
            "temperature": row["temperature"],
            "confidence_threshold": (
                row["confidence_threshold"] if row["confidence_threshold"] <= 1 else None
            ),
            "confident_precision": row["confident_precision"],
            "confident_coverage": row["confident_coverage"],
            "fitted_on": f"{args.k}-fold out-of-fold logits of {row['method']}",
        },
        trained_on="every labelled photo (train + validation + test)"
        + (
            f", {method.inner_holdout:.0%} held out to pick the head's epoch"
            if method.fine_tune
            else ""
        ),
    )
    if not method.fine_tune and oof_logits is not None and fold is not None:
        fields = _catalogue(by_input, targets, fold, oof_logits, row, checkpoint)
        where = checkpoint.parent.relative_to(args.ship) / fields["catalogue"]["file"]
        fields["catalogue"]["file"] = where.as_posix()
        entry["calibration"] |= fields
    manifest.record(args.ship, [entry], name)
    print(f"shipped {name}: {checkpoint} (best_run in {args.ship / manifest.NAME})", flush=True)
    return checkpoint


def _catalogue(by_input, targets, fold, oof_logits, row, checkpoint: Path) -> dict:
    """The catalogue beside ``checkpoint`` and the calibration fields it changes."""
    from training import calibration, catalogue
    from training.cv import CONFIDENT_PRECISION
    from training.methods import FEATURES

    probs = calibration.softmax(oof_logits, row["temperature"])
    return catalogue.ship(
        by_input[FEATURES], targets, fold, probs, checkpoint.parent, CONFIDENT_PRECISION
    )


def _groups(dataset):
    """Each photo's product id, so that one product's photos share a fold."""
    from training import field_data

    return field_data.dataset_groups(dataset.splits)


if __name__ == "__main__":
    sys.exit(main())
