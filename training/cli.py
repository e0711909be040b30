"""``python -m training``: train, cross-validate and evaluate the Xception clothing classifier."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training import config, field
from training.methods import METHODS, TODAY, TUNABLE
from training.tf_logs import quiet_tensorflow

DESCRIPTION = """\
Transfer learning on the clothing dataset: a frozen ImageNet Xception base and a small
dense top (and, for the ft-* methods, the base's exit flow fine-tuned), trained on the
base's output for every photo, computed once (progress bar) and cached under --cache-dir.
The recipes are the methods of training/methods.py: today, ft-block13, ft-block13-swa.

commands:
  cv        stratified k-fold cross-validation over every labelled photo, per method
            (accuracy, top-3, ECE with 95% intervals), calibration fitted out of fold;
            --ship trains the chosen method on all photos for `python -m convert`
            (what `make run` does)
  train     fit one method on the train split, keep the best epoch on the validation
            split, save it as .h5 with manifest.json (best_run), score it on test
  evaluate  score a manifest run's checkpoint on a split (default: best_run on test)

Run `python -m training COMMAND --help` for each command's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in field.COMMANDS:  # the feedback table, no TensorFlow
        return field.run(args)
    if not args.tf_log:
        quiet_tensorflow()
    if args.command == "cv":
        from training import cv_command

        return cv_command.run(args)
    from training import commands  # TensorFlow loads here, not for --help

    try:
        return commands.run(args)
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
    from training import cv_command

    cross = sub.add_parser(
        "cv",
        help="cross-validate methods over every labelled photo; --ship the chosen one",
        description=cv_command.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cv_command.add_arguments(cross)
    train = sub.add_parser(
        "train",
        help="fit one method on train, best epoch on validation, evaluate on test",
        description="Fit one method on the train split; the first best epoch by validation "
        "accuracy is saved (base + head, one .h5) and recorded as best_run in manifest.json, "
        "then scored on the test split.",
    )
    config.add_common(train)
    train.add_argument("--output-dir", type=Path, default=config.TRAINING_DIR)
    train.add_argument(
        "--method", default=TODAY.name, choices=tuple(METHODS), help="(default: %(default)s)"
    )
    train.add_argument("--name", default="", help="run name (default: METHOD_sSIZE)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the test-split scoring")
    g = train.add_argument_group("recipe overrides (default: the method's)")
    for name in TUNABLE:
        default = getattr(TODAY, name)
        g.add_argument(
            "--" + name.replace("_", "-"), type=type(default), help=f"(today: {default})"
        )
    evaluate = sub.add_parser("evaluate", help="score a manifest run on a split")
    config.add_common(evaluate)
    evaluate.add_argument("--output-dir", type=Path, default=config.TRAINING_DIR)
    evaluate.add_argument("--run", default=None, help="run name (default: the manifest's best_run)")
    evaluate.add_argument(
        "--split", default="test", choices=("train", "validation", "test"), help="%(default)s"
    )
    return parser
