"""``python -m torch_training``: train, cache features, export, in PyTorch.

python -m torch_training train                 # 299 px, frozen base, best epoch kept
python -m torch_training train --fine-tune block13
python -m torch_training features --splits train   # warm the cache (resumable)
python -m torch_training export --int8         # verified ONNX + int8 + serve.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from convert.errors import ConvertError, VerificationError
from torch_training import commands
from torch_training.device import DEVICES
from training.config import RunConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torch_training", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one configuration, score it on test, record it")
    _common(train)
    _model(train)
    f = train.add_argument_group("fine-tuning (after the head)")
    f.add_argument("--fine-tune", choices=("block13", "block14"), default="", help="default: off")
    f.add_argument("--fine-tune-epochs", type=int, default=5, help="(default: %(default)s)")
    f.add_argument("--fine-tune-learning-rate", type=float, default=1e-4, help="(default: 1e-4)")
    feats = sub.add_parser("features", help="compute and cache base features (resumable)")
    _common(feats)
    feats.add_argument("--image-size", type=int, default=299, help="(default: %(default)s)")
    feats.add_argument(
        "--splits", nargs="+", default=list(commands.SPLITS), choices=commands.SPLITS
    )
    feats.add_argument("--kind", choices=("pooled", "block12"), default="pooled")
    export = sub.add_parser("export", help="best checkpoint -> verified ONNX (+ int8)")
    _common(export)
    export.add_argument("--run", default=None, help="run name (default: the manifest's best_run)")
    export.add_argument(
        "-o", "--output", type=Path, default=Path("artifacts/torch/model/model.onnx")
    )
    export.add_argument("--int8", action="store_true", help="also the static QDQ int8 variant")
    export.add_argument("--limit", type=int, default=None, help="verify on at most N photos")
    export.add_argument("--calibration-images", type=int, default=200)
    export.add_argument("--eval-limit", type=int, default=None, help="photos per split for int8")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=commands.default_data_dir(),
        help="dataset root (default: $DATA_DIR or data/clothing-dataset-small)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=os.environ.get("XCEPTION_WEIGHTS"),
        help="Keras Xception .weights.h5 (include_top=False) (default: $XCEPTION_WEIGHTS)",
    )
    p.add_argument("--output-dir", type=Path, default=Path("artifacts/torch/training"))
    p.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    p.add_argument("--no-cache", action="store_true", help="keep nothing on disk between runs")
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument(
        "--engine",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="what computes the cached pooled features: torch, or onnxruntime on the base's "
        "own ONNX export (CPU only, ~1.5x faster) (default: torch)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for init and order")


def _model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training (the Keras path's options and defaults)")
    g.add_argument("--image-size", type=int, default=299, help="(default: %(default)s)")
    g.add_argument("--learning-rate", type=float, default=1e-3, help="Adam (default: 1e-3)")
    g.add_argument("--size-inner", type=int, default=100, help="0 = no inner layer (default: 100)")
    g.add_argument("--droprate", type=float, default=0.2, help="(default: 0.2)")
    g.add_argument("--epochs", type=int, default=20, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--l2", type=float, default=0.0, help="L2 on the dense kernels")
    g.add_argument("--name", default="", help="run name (default: made from the settings)")


def to_options(args: argparse.Namespace) -> commands.Options:
    if args.weights is None:
        raise ValueError(
            "Expected --weights or XCEPTION_WEIGHTS: the Keras Xception .weights.h5 file "
            "(include_top=False). Received: neither"
        )
    run = RunConfig(image_size=getattr(args, "image_size", 299), seed=args.seed)
    if args.command == "train":
        for name in ("epochs", "batch_size", "fine_tune_epochs"):
            if getattr(args, name) < 1:
                raise ValueError(f"Expected --{name.replace('_', '-')} >= 1. Received: "
                                 f"{getattr(args, name)}")  # fmt: skip
        run = replace(
            run,
            learning_rate=args.learning_rate,
            size_inner=args.size_inner,
            droprate=args.droprate,
            epochs=args.epochs,
            batch_size=args.batch_size,
            label_smoothing=args.label_smoothing,
            l2=args.l2,
            name=args.name,
            fine_tune_from=args.fine_tune,
            fine_tune_epochs=args.fine_tune_epochs,
            fine_tune_learning_rate=args.fine_tune_learning_rate,
        )
    return commands.Options(
        data_dir=args.data_dir,
        weights=args.weights,
        output_dir=args.output_dir,
        cache_dir=None if args.no_cache else args.cache_dir,
        device=args.device,
        threads=args.threads,
        engine=args.engine,
        run=run,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = to_options(args)
        if args.command == "train":
            return commands.train(options)
        if args.command == "features":
            return commands.features(options, tuple(args.splits), args.kind)
        return commands.export(
            options,
            args.run,
            args.output,
            limit=args.limit,
            int8=args.int8,
            calibration_images=args.calibration_images,
            eval_limit=args.eval_limit,
            seed=args.seed,
        )
    except (ValueError, FileNotFoundError, ConvertError) as exc:
        print(f"torch_training: error: {exc}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"torch_training: FAILED: {exc}", file=sys.stderr)
        return exc.exit_code
