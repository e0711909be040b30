"""The simulated week (scripts/feedback_week.py) goes through the real feedback code into
moto's table, and the field report over it adds up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from tests.aws_local import moto_endpoint
from training import field

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "feedback_week.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("feedback_week", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_small_simulated_week_gives_a_report_per_model_version(monkeypatch) -> None:
    week = load_script()
    with moto_endpoint():
        monkeypatch.setenv("FEEDBACK_TABLE", "unused")  # the script sets its own
        rows = week.simulate(per_day=15, seed=3)
    assert len(rows) == 7 * 15 and all("product_id" in row for row in rows)
    report = field.summarise(rows)
    assert set(report) == {"all", week.OLD.version, week.NEW.version}
    assert report[week.OLD.version]["judged"] == 3 * 15
    overall = report["all"]
    overridden = sum(n for finals in overall["overrides"].values() for n in finals.values())
    assert overall["accepted"] + overridden == overall["judged"]
    assert 0.5 < overall["acceptance"] < 1.0
