"""``python -m training``: train, tune and evaluate the Xception clothing classifier."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from training import field
from training.augment import ALL, COURSE, Augmentation
from training.config import (
    CACHE_DIR,
    DATA_DIR,
    RULE,
    TRAINING_DIR,
    TUNE_RUN,
    TUNING_DIR,
    Options,
    RunConfig,
    SweepPlan,
)
from training.tf_logs import TF_LOG_HELP, quiet_tensorflow

RUN = RunConfig()
SWEEP = SweepPlan()

DESCRIPTION = """\
Transfer learning on the clothing dataset: a frozen ImageNet Xception base and a small
dense top, the best epoch (by validation accuracy) kept as a complete Keras .h5 model
plus manifest.json. Without augmentation the top trains on pooled base features that are
computed once (progress bar) and cached under --cache-dir: the "fast path". With
augmentation every epoch runs the images through the base (slow on a CPU).

commands:
  train     train one configuration (default: the shipped 299 px model), evaluate the
            best checkpoint on the test split and record it as best_run in the manifest
  tune      sweep learning rate, inner size, dropout and augmentation (in that order,
            each stage keeping the best of the ones before), write a results table
            (markdown, CSV, JSON) and learning-curve PNGs
  evaluate  score a manifest run's checkpoint on a split (default: best_run on test)
  cv        stratified k-fold cross-validation over every labelled photo, per method
            (accuracy, top-3, ECE with 95% intervals), calibration fitted out of fold;
            --ship trains the chosen method on all photos for `python -m convert`

Run `python -m training COMMAND --help` for each command's options.
"""

TRAIN_DEFAULTS = f"""\
Defaults: {RUN.image_size} px, Adam lr {RUN.learning_rate:g}, inner Dense({RUN.size_inner}) + \
Dropout({RUN.droprate:g}), {RUN.epochs} epochs on the fast
path, then test metrics. On 2 CPU cores the first run spends ~4-9 min extracting features
(cached for later runs); training the top then takes seconds. With --fine-tune, the
head is trained first, then the top blocks with it; best_run is the better of the two
by validation accuracy (fine-tuning wins a tie). Test metrics go into the manifest.
"""

TUNE_DESCRIPTION = textwrap.fill(
    f"Choosing the best: {RULE}. Each stage keeps the best value of the stages before it.", 88
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in field.COMMANDS:  # the feedback table, no TensorFlow
        return field.run(args)
    if args.command == "cv":
        if not args.tf_log:
            quiet_tensorflow()
        from training import cv_command

        return cv_command.run(args)
    try:
        options = to_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.tf_log:
        quiet_tensorflow()
    from training import commands  # TensorFlow loads here, not for --help

    try:
        return commands.run(options)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    field.add_parsers(sub)
    train = sub.add_parser(
        "train",
        help="train one configuration, evaluate it on test, record it",
        description=TRAIN_DEFAULTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(train, TRAINING_DIR)
    _model(train, RUN)
    train.add_argument(
        "--no-evaluate", action="store_true", help="skip the test-split evaluation after training"
    )
    f = train.add_argument_group(
        "fine-tuning (after the head converges; no augmentation)",
        "Unfreezes Xception's top blocks (BatchNorm stays frozen) and trains them with the head "
        "at a low learning rate on cached activations (computed once, like the features). "
        "Recorded as a second run, named with _ft13/_ft14, which becomes best_run.",
    )
    f.add_argument(
        "--fine-tune",
        choices=("block13", "block14"),
        default=RUN.fine_tune_from,
        help="fine-tune from this block up: block13 = the whole exit flow (default: off)",
    )
    f.add_argument(
        "--fine-tune-epochs", type=int, default=RUN.fine_tune_epochs, help="(default: %(default)s)"
    )
    f.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=RUN.fine_tune_learning_rate,
        help="Adam (default: %(default)s)",
    )
    f.add_argument(
        "--fine-tune-flip",
        action="store_true",
        help="also train on mirrored copies of the train images (a cached horizontal flip: "
        "one more pass over the train split, then epochs twice as long)",
    )
    from training import cv_command

    cross = sub.add_parser(
        "cv",
        help="cross-validate methods over every labelled photo; --ship the chosen one",
        description=cv_command.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cv_command.add_arguments(cross)
    tune = sub.add_parser(
        "tune",
        help="sweep learning rate, inner size, dropout, augmentation",
        description=TUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(tune, TUNING_DIR)
    _model(tune, TUNE_RUN)
    tune.add_argument(
        "--stages",
        default=_joined(SWEEP.stages),
        help="comma-separated stages, run in this order (default: %(default)s)",
    )
    tune.add_argument(
        "--learning-rates",
        default=_joined(SWEEP.learning_rates),
        help="lr stage values (default: %(default)s)",
    )
    tune.add_argument(
        "--inner-sizes",
        default=_joined(SWEEP.inner_sizes),
        help="inner stage values (default: %(default)s)",
    )
    tune.add_argument(
        "--droprates",
        default=_joined(SWEEP.droprates),
        help="dropout stage values (default: %(default)s)",
    )
    tune.add_argument(
        "--aug-epochs",
        type=int,
        default=SWEEP.aug_epochs,
        help="epochs of the augmented run of the aug stage (default: --epochs); it is the "
        "slow one. Its augmentation is --augment (default for tune: course)",
    )
    evaluate = sub.add_parser("evaluate", help="score a manifest run on a split")
    _common(evaluate, TRAINING_DIR)
    evaluate.add_argument("--run", default=None, help="run name (default: the manifest's best_run)")
    evaluate.add_argument(
        "--split",
        default=Options.split,
        choices=("train", "validation", "test"),
        help="default: %(default)s",
    )
    return parser


def _common(p: argparse.ArgumentParser, output_dir: Path) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", DATA_DIR)),
        help="dataset root with train/, validation/, test/, one folder per class "
        f"(default: $DATA_DIR or {DATA_DIR})",
    )
    p.add_argument(
        "--weights",
        default=os.environ.get("XCEPTION_WEIGHTS", Options.weights),
        help="base weights: 'imagenet' (Keras download), a .weights.h5 path (include_top="
        "False), or 'none' for random weights (tests) (default: $XCEPTION_WEIGHTS or imagenet)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=output_dir,
        help="where runs/, manifest.json and plots go (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE_DIR,
        help="decoded pixels and base features, reused across runs (default: %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="keep nothing on disk between runs")
    p.add_argument("--seed", type=int, default=RUN.seed, help="seed for weights init and shuffling")
    p.add_argument(
        "--verbose",
        type=int,
        default=Options.verbose,
        choices=(0, 1, 2),
        help="Keras progress: 0 silent, 1 bar, 2 one line per epoch (default: %(default)s)",
    )
    p.add_argument("--tf-log", action="store_true", help=TF_LOG_HELP)
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 compute (for GPUs; logits stay float32). Several GPUs are used "
        "through MirroredStrategy automatically",
    )


def _model(p: argparse.ArgumentParser, defaults: RunConfig) -> None:
    """Model and augmentation options, defaulting to ``defaults``."""
    g = p.add_argument_group("model and training")
    g.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help="input size in px, >= 71 (default: %(default)s)",
    )
    g.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="Adam (default: %(default)s)",
    )
    g.add_argument(
        "--size-inner",
        type=int,
        default=defaults.size_inner,
        help="inner Dense width, 0 = none (default: %(default)s)",
    )
    g.add_argument(
        "--droprate",
        type=float,
        default=defaults.droprate,
        help="dropout after it (default: %(default)s)",
    )
    g.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="epochs (default: %(default)s)"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="batch size (default: %(default)s)",
    )
    g.add_argument(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="(default: %(default)s)",
    )
    g.add_argument(
        "--l2",
        type=float,
        default=defaults.l2,
        help="L2 on the dense kernels (default: %(default)s)",
    )
    g.add_argument(
        "--name", default=defaults.name, help="run name (default: made from the settings)"
    )
    a = p.add_argument_group(
        "augmentation (train split only; turns the fast path off)",
        "--augment picks a preset; the switches below override its values",
    )
    a.add_argument(
        "--augment",
        choices=("none", "course", "all"),
        default=None,
        help=f"none; course: {COURSE.describe()}; all: {ALL.describe()} "
        "(default: none for train, course for the aug stage of tune)",
    )
    a.add_argument("--flip", action=argparse.BooleanOptionalAction, help="random horizontal flip")
    a.add_argument("--rotation", type=float, help="max rotation, fraction of a turn (0.05 = 18°)")
    a.add_argument("--shift", type=float, help="max width/height shift, fraction of the size")
    a.add_argument("--shear", type=float, help="max shear intensity")
    a.add_argument("--zoom", type=float, help="max zoom in/out, fraction of the size")
    a.add_argument("--patch", type=float, help="probability of a random black patch")


def to_options(args: argparse.Namespace) -> Options:
    """Validate and freeze the parsed arguments."""
    weights = None if str(args.weights).lower() == "none" else args.weights
    common = {
        "command": args.command,
        "data_dir": args.data_dir,
        "weights": weights,
        "output_dir": args.output_dir,
        "cache_dir": None if args.no_cache else args.cache_dir,
        "verbose": args.verbose,
        "mixed_precision": args.mixed_precision,
    }
    if args.command == "evaluate":
        return Options(run=RunConfig(seed=args.seed), run_name=args.run, split=args.split, **common)
    augmentation = _augmentation(args, default="none")
    run = RunConfig(
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        size_inner=args.size_inner,
        droprate=args.droprate,
        epochs=_positive("epochs", args.epochs),
        batch_size=_positive("batch-size", args.batch_size),
        label_smoothing=args.label_smoothing,
        l2=args.l2,
        augmentation=augmentation,
        seed=args.seed,
        name=args.name,
    )
    if args.command == "train":
        if args.fine_tune_flip and not args.fine_tune:
            raise ValueError("Expected --fine-tune BLOCK with --fine-tune-flip.")
        if args.fine_tune and augmentation.enabled:
            raise ValueError(
                "Expected --fine-tune without augmentation (it trains on cached activations). "
                f"Received augmentation: {augmentation.describe()}"
            )
        run = replace(
            run,
            fine_tune_from=args.fine_tune,
            fine_tune_epochs=_positive("fine-tune-epochs", args.fine_tune_epochs),
            fine_tune_learning_rate=args.fine_tune_learning_rate,
            fine_tune_flip=args.fine_tune_flip,
        )
        return Options(run=run, evaluate=not args.no_evaluate, **common)
    sweep = SweepPlan(
        learning_rates=_split(args.learning_rates, float),
        inner_sizes=_split(args.inner_sizes, int),
        droprates=_split(args.droprates, float),
        augmentation=augmentation if augmentation.enabled else COURSE,
        aug_epochs=args.aug_epochs,
        stages=_split(args.stages, str),
    )
    # The aug stage alone augments: the sweep starts from the un-augmented configuration.
    return Options(run=replace(run, augmentation=Augmentation()), sweep=sweep, **common)


def _augmentation(args: argparse.Namespace, default: str) -> Augmentation:
    preset = {"none": Augmentation(), "course": COURSE, "all": ALL}[args.augment or default]
    overrides = {
        name: getattr(args, name)
        for name in ("flip", "rotation", "shift", "shear", "zoom", "patch")
        if getattr(args, name) is not None
    }
    return Augmentation(**{**preset.__dict__, **overrides})


def _joined(values) -> str:
    """A default tuple as the comma-separated text the option takes."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _split(text: str, kind):
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        expected = f"Expected comma-separated {kind.__name__} values"
        raise ValueError(f"{expected}. Received: {text!r}") from exc


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"Expected --{name} >= 1. Received: {value}")
    return value
