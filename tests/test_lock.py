"""requirements/dev.txt, the locked development install, agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    return {normalise(m[1]): m[2] for r in requirements if (m := PIN.match(r))}


def test_the_lock_pins_every_dev_requirement_at_its_pyproject_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    wanted = pins(project["dependency-groups"]["dev"])
    for extra in ("serve", "train", "convert", "bench"):
        wanted |= pins(extras[extra])
    locked = {
        normalise(m[1]): m[2] for m in PIN.finditer((ROOT / "requirements/dev.txt").read_text())
    }
    assert {name: locked.get(name) for name in wanted} == wanted


def test_every_locked_package_carries_hashes() -> None:
    text = (ROOT / "requirements/dev.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert entries and all("--hash=sha256:" in entry for entry in entries if "==" in entry)
