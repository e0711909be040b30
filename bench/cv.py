"""Cross-validation benchmark: every method of ``training.methods`` on every labelled photo.

Reproduces the figures of ``docs/model-quality.md``: runs ``python -m training cv`` (5
folds, seed 1, every method, fine-tuning included; report, reliability diagrams and
out-of-fold logits in ``artifacts/cv/``) and publishes its table as
``docs/results/cv-DATE.md``. Per-method fold results are cached in ``artifacts/cv/folds/``,
so a rerun only trains what changed. A first run on 2 idle cores extracts the base
features of every photo (~7 min) and trains the head-only method (minutes), then runs each
fine-tuning method per fold (the block13 input of every photo once, ~6 min, then ~12 min
per fold and method).

    DATA_DIR=... XCEPTION_WEIGHTS=... python -m bench.cv [--methods today,ft-block13] [--k 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.results import publish
from training.methods import METHODS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cv", description=__doc__)
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated (default: all)"
    )
    parser.add_argument("--k", default="5")
    parser.add_argument("--seed", default="1")
    parser.add_argument("--output-dir", type=Path, default=Path("artifacts/cv"))
    args = parser.parse_args(argv)
    from training import cv_command

    cv_argv = ["--k", args.k, "--seed", args.seed, "--output-dir", str(args.output_dir)]
    cv_argv += ["--methods", args.methods]
    code = cv_command.main(cv_argv)
    if code != 0:
        return code
    table = (args.output_dir / "cv.md").read_text()
    body = table[table.index("\n|") + 1 :]  # publish writes the title, date and command
    path = publish(
        "cv",
        "Cross-validation per method",
        body,
        command="python -m training cv " + " ".join(cv_argv),
    )
    print(f"published {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
