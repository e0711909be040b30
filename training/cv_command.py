"""Cross-validate methods over every labelled photo, report, and (``--ship``) train the final model.

Shipping trains the chosen method's head on *every* labelled photo for the epoch count
cross-validation chose, puts it on the frozen base as a complete ``.h5`` model, and
records it in the training folder's manifest as ``best_run`` together with the
calibration fitted on the out-of-fold predictions (temperature, confidence threshold),
which ``python -m convert`` writes into the ONNX metadata.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from lambda_function import files
from training.methods import HEAD_ONLY, METHODS, Method

DEFAULT_METHODS = HEAD_ONLY
DESCRIPTION = __doc__


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
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small")),
        help="dataset root; all its splits are pooled (default: $DATA_DIR)",
    )
    p.add_argument(
        "--extra-data",
        type=Path,
        default=None,
        help="extra labelled photos (python -m training field-export): pooled with the "
        "dataset, each product's photos kept in one fold",
    )
    p.add_argument(
        "--weights",
        default=os.environ.get("XCEPTION_WEIGHTS", "imagenet"),
        help="base weights (default: $XCEPTION_WEIGHTS or imagenet)",
    )
    p.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    p.add_argument("--output-dir", type=Path, default=Path("artifacts/cv"), help="report folder")
    p.add_argument("--k", type=int, default=5, help="folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="folds and initialisation")
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated, from: "
        + ", ".join(METHODS)
        + " (default: every head-only one; fine-tuning takes ~12 min per fold on 2 cores)",
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
    p.add_argument("--tf-log", action="store_true", help="show TensorFlow's C++ log lines")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.cv_command`` (the same as ``python -m training cv``)."""
    args = build_parser().parse_args(argv)
    return run(args, ["cv", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Cross-validate, write the report, ship if asked; ``argv`` is recorded as the command."""
    from training import calibration, cv, cv_report

    try:
        methods = [_method(name) for name in args.methods.split(",") if name.strip()]
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
    from training import data, views

    dataset = data.scan(args.data_dir, extra=args.extra_data)
    needed = tuple(dict.fromkeys(v for m in methods for v in m.views))
    started = time.perf_counter()
    pooled = tuple(v for v in needed if v in views.VIEWS)
    by_view, targets = views.labelled_features(
        dataset, pooled, args.image_size, _weights(args.weights), args.cache_dir
    )
    by_view |= _activations(methods, dataset, args)
    print(f"features of {len(targets)} photos, views {', '.join(needed)}", flush=True)
    rows, results, fold = cv.run(
        methods,
        by_view,
        targets,
        k=args.k,
        seed=args.seed,
        n_classes=len(dataset.labels),
        reference=args.reference,
        cache_dir=args.output_dir / "folds",
        base=partial(_fresh_base, args),
        groups=_groups(dataset) if args.extra_data is not None else None,
    )
    if args.reference not in results:
        for row in rows:
            row.update(kept=False, gain_vs_reference=None, gain_ci=(0.0, 0.0))
    if args.reference in results:
        chosen = cv.choose(rows, args.reference, _servable)
    else:  # nothing to compare with: the most accurate servable method of those run
        servable = [r for r in rows if _servable(r)] or rows
        chosen = max(servable, key=lambda r: r["accuracy"])["method"]
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
        "tta_servable": False,
        "note": "Test-time flip averaging doubles the base's work per photo; it is reported "
        "but not shipped unless serving with it stays >= 2x faster than onnxruntime fp32.",
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
        ship(METHODS[chosen], row, by_view, targets, dataset, args)
    return 0


def ship(
    method: Method,
    row: dict,
    by_view: dict[str, np.ndarray],
    targets: np.ndarray,
    dataset,
    args: argparse.Namespace,
) -> Path:
    """Train ``method`` on every photo, save base + head as ``.h5``, record it as best_run.

    A fine-tuning method keeps its recipe: the head's epoch and the fine-tuning run on a
    held-out 10%, fine-tuned for the median of the folds' best epochs.
    """
    epochs = row["epochs"] or int(np.median(row["fold_epochs"]))
    start = time.perf_counter()
    model, top = _train_on_everything(method, epochs, by_view, targets, dataset, args)
    seconds = time.perf_counter() - start
    name = f"cv_{method.name}_s{args.image_size}_all"
    run_dir = args.ship / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("*.h5"):
        old.unlink()
    checkpoint = run_dir / f"xception_v1_{epochs:02d}_{row['accuracy']:.3f}.h5"
    model.save(checkpoint)
    _check_full_model(model, top, dataset, args.image_size)
    entry = _manifest_entry(name, checkpoint, args, method, row, epochs, seconds, dataset)
    _record(args.ship, entry)
    print(f"shipped {name}: {checkpoint} (best_run in {args.ship / 'manifest.json'})", flush=True)
    return checkpoint


def _train_on_everything(method: Method, epochs: int, by_view, targets, dataset, args):
    """(the complete network, its head) trained as ``method`` on every labelled photo."""
    from training.methods import train_head
    from training.model import make_network

    everything, n_classes = np.arange(len(targets)), len(dataset.labels)
    if method.fine_tune:
        from training.finetune import fine_tune_fold

        final = replace(method, fine_tune_epochs=epochs)
        base = partial(_fresh_base, args)
        run = fine_tune_fold(
            final, by_view, targets, everything, everything[:0], n_classes, 1, base
        )
        return run.network, run.top
    final = replace(method, epochs=epochs, inner_holdout=0.0)
    head = train_head(final, by_view, targets, everything, everything[:0], n_classes, 1)
    network = make_network(
        args.image_size,
        method.size_inner,
        method.droprate,
        n_classes=n_classes,
        l2=method.l2,
        base=_fresh_base(args),
    )
    network.top.set_weights(head.top.get_weights())
    return network.model, network.top


def _check_full_model(model, top, dataset, image_size: int) -> None:
    """The saved network must give the head's logits on the base's features (8 photos)."""
    from lambda_function.preprocessing import scale
    from training import data
    from training.model import make_feature_extractor

    files = [f for split in dataset.splits for f in dataset[split].files[:3]][:8]
    pixels = scale(np.stack([data.decode_file(path, image_size) for path in files]))
    base = next(layer for layer in model.layers if layer.name.startswith("xception"))
    features = make_feature_extractor(base).predict_on_batch(pixels)
    expected = np.asarray(top(features, training=False))
    got = np.asarray(model.predict_on_batch(pixels))
    if not np.allclose(expected, got, atol=1e-4):
        raise RuntimeError(
            "Expected the saved network to reproduce the trained head on base features. "
            f"Received a max logit difference of {np.abs(expected - got).max():.2e}"
        )


def _manifest_entry(name, checkpoint, args, method, row, epochs, seconds, dataset) -> dict:
    from training import features
    from training.manifest import versions

    root = args.ship
    shipped = replace(method, **{"fine_tune_epochs" if method.fine_tune else "epochs": epochs})
    return {
        "name": name,
        "config": {
            **shipped.to_dict(),
            "image_size": args.image_size,
            "name": name,
            "path": _path(shipped) + ", trained on every labelled photo",
        },
        "labels": list(dataset.labels),
        "best_checkpoint": checkpoint.relative_to(root).as_posix(),
        "best_epoch": epochs,
        # There is no validation split left: the honest figure is the CV estimate.
        "best_val_accuracy": row["accuracy"],
        "cv": {
            key: row[key]
            for key in ("accuracy", "accuracy_ci", "top3", "ece_calibrated", "fold_epochs")
        }
        | {"k": args.k, "seed": args.seed, "report": str(args.output_dir / "cv.json")},
        "calibration": {
            "temperature": row["temperature"],
            "confidence_threshold": (
                row["confidence_threshold"] if row["confidence_threshold"] <= 1 else None
            ),
            "confident_precision": row["confident_precision"],
            "confident_coverage": row["confident_coverage"],
            "fitted_on": f"{args.k}-fold out-of-fold logits of {row['method']}",
        },
        "fingerprint": {
            "data": dataset.fingerprint,
            "weights": features.weights_fingerprint(_weights(args.weights)),
        },
        "train_seconds": round(seconds, 2),
        "trained_on": "every labelled photo (train + validation + test)"
        + (
            f", {method.inner_holdout:.0%} held out to pick the head's epoch"
            if method.fine_tune
            else ""
        ),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "checkpoint_sha256": files.sha256_file(checkpoint),
    }


def _path(method: Method) -> str:
    """How a shipped model was trained, in words (the manifest's ``config.path``)."""
    if not method.fine_tune:
        return "fast (cached features)"
    path = f"fine-tune from {method.fine_tune} (cached activations)"
    first, last = method.fine_tune_average_from, method.fine_tune_epochs
    if first and last >= first:
        path += f", weights averaged over fine-tuning epochs {first}-{last}"
    return path


def _record(root: Path, entry: dict) -> None:
    from training import manifest

    manifest.record(root, [entry], entry["name"])


def _activations(methods: Sequence[Method], dataset, args) -> dict[str, np.ndarray]:
    """The cached input of every block some method fine-tunes, by view key."""
    from training.finetune import labelled_activations

    tuned = {m.activations_view: m.fine_tune for m in methods if m.fine_tune}
    return {
        key: labelled_activations(
            dataset, block, args.image_size, _weights(args.weights), args.cache_dir
        )
        for key, block in tuned.items()
    }


def _groups(dataset):
    from training import field_data

    return field_data.dataset_groups(dataset.splits)


def _fresh_base(args: argparse.Namespace):
    from training.model import make_base

    return make_base(args.image_size, _weights(args.weights))


def _servable(row: dict) -> bool:
    return not row["config"].get("tta_flip")


def _method(name: str) -> Method:
    if name.strip() not in METHODS:
        raise ValueError(f"Expected methods among {', '.join(METHODS)}. Received: {name.strip()!r}")
    return METHODS[name.strip()]


def _weights(value: str | None) -> str | None:
    return None if value is None or str(value).lower() == "none" else value


if __name__ == "__main__":
    sys.exit(main())
