"""Where a benchmark's figures go.

JSON and scratch output: ``artifacts/bench/`` (git ignores it). The tables people read:
one markdown file per run, ``docs/results/NAME-YYYY-MM-DD.md``, which starts with the date,
the command that produced it, the commit it ran at and the machine. Commit it when its figures
are worth keeping and link to it from the docs, so that every figure appears once, with its
source; a study deleted later stays reproducible from the commit its file names.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

SCRATCH = Path("artifacts/bench")
RESULTS = Path("docs/results")
REPO = Path(__file__).resolve().parents[1]


def publish(
    name: str,
    title: str,
    body: str,
    results: Path = RESULTS,
    *,
    command: str | None = None,
    when: datetime | None = None,
    repo: Path = REPO,
) -> Path:
    """Write ``results/NAME-DATE.md``: ``title``, the date, ``command`` (default: this
    process's command line), the commit of ``repo`` and the machine, then ``body``.
    Returns the path."""
    when = when or datetime.now(UTC)
    path = results / f"{name}-{when:%Y-%m-%d}.md"
    header = [
        f"# {title}, {when:%Y-%m-%d}",
        "",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command or this_command()}`",
        f"- Commit: {commit(repo)}",
        f"- Machine: {machine()}",
        "",
    ]
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + body.rstrip("\n") + "\n", encoding="utf-8")
    return path


def this_command() -> str:
    """The command line that started this process, as a user would type it."""
    argv = list(sys.orig_argv)
    argv[0] = "python"
    return shlex.join(argv)


def commit(repo: Path = REPO) -> str:
    """``repo``'s HEAD, marked dirty when files differ from it (the figures may then come from
    code no commit holds). Never fails: a benchmark that ran for an hour still publishes."""
    try:
        head = _git(repo, "rev-parse", "HEAD")
        changes = _git(repo, "status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return f"unknown (no git checkout at {repo})"
    if changes:
        return f"`{head}`, dirty (uncommitted changes)"
    return f"`{head}`"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def machine() -> str:
    """CPU model and count, OS and Python: enough to tell two machines' figures apart."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({cpu}), {platform.system()}, Python {platform.python_version()}"
