"""Mutation testing of ``lambda_function/`` with mutmut, on a seeded sample (not part of CI).

    python scripts/mutation.py [--sample 150] [--seed 12] [--minutes 14]

mutmut (pinned in the ``dev`` extra, configured under ``[tool.mutmut]`` in pyproject.toml)
copies the package to ``mutants/`` and generates every mutant. This picks a seeded random
sample of their names, runs those not yet checked (and the survivors, which a test added
since may kill) for at most ``--minutes`` (so that a run fits one turn of the shared heavy
lock; run it again to go on), then prints the score
over the sample: killed / (killed + survived), timeouts counting as killed. Survivors are
listed for review (``mutmut show NAME``): an equivalent one is set aside in
``EQUIVALENT`` below with the reason, every other one deserves a test.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from pathlib import Path

MUTMUT = [sys.executable, "-m", "mutmut"]
KILLED = {"killed", "timeout", "segfault", "suspicious"}
SURVIVED = {"survived", "no tests"}
EQUIVALENT: dict[str, str] = {
    "lambda_function.results.x_to_attribute__mutmut_5": (
        "repr(float) -> str(float): the same text for every float since Python 3.2"
    ),
    "lambda_function.fetch.dns.x_resolve_checked__mutmut_23": (
        "transient=True -> None on EAI_AGAIN: only fetch.http's retry loop reads `transient`, "
        "and name resolution happens before it, so the flag is never consulted"
    ),
}
"""Mutant name -> why no test can tell it from the original (reviewed by hand)."""


def statuses() -> dict[str, str]:
    """Every generated mutant's status, from ``mutmut results --all true``."""
    out = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"^\s+(\S+): (.+)$", out, flags=re.MULTILINE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", type=int, default=150)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--children", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path("mutants").is_dir():  # generate every mutant (and the test map) once
        first = "lambda_function.errors.x_bounded__mutmut_1"
        subprocess.run([*MUTMUT, "run", "--max-children", "1", first], check=False)
    every = statuses()
    # drawn from every mutant, so that setting one aside keeps the rest of the sample
    drawn = sorted(random.Random(args.seed).sample(sorted(every), min(args.sample, len(every))))
    sample = [name for name in drawn if name not in EQUIVALENT]
    # survivors run again too: a test added since may kill them now
    pending = [name for name in sample if every[name] == "not checked" or every[name] in SURVIVED]
    if pending:
        try:
            subprocess.run(
                [*MUTMUT, "run", "--max-children", str(args.children), *pending],
                timeout=args.minutes * 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"stopped after {args.minutes} min; run again to go on")
        every = statuses()
    counts: dict[str, int] = {}
    for name in sample:
        counts[every[name]] = counts.get(every[name], 0) + 1
    killed = sum(counts.get(status, 0) for status in KILLED)
    survived = sum(counts.get(status, 0) for status in SURVIVED)
    print(
        f"{len(every)} mutants generated; sample of {len(drawn)} (seed {args.seed}), "
        f"{len(drawn) - len(sample)} equivalent set aside: {counts}"
    )
    if killed + survived:
        print(f"score: {killed}/{killed + survived} = {killed / (killed + survived):.1%} killed")
    for name in sample:
        if every[name] in SURVIVED:
            print(f"  survived: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
