"""``bench.results.publish``: one dated markdown file per run, with its command and machine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.results import publish


def test_a_result_is_dated_and_names_its_command_and_machine(tmp_path: Path) -> None:
    when = datetime(2026, 12, 1, 14, 5, tzinfo=UTC)
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    path = publish("soak", "Soak", table, tmp_path, command="python -m bench.soak", when=when)

    assert path == tmp_path / "soak-2026-12-01.md"
    lines = path.read_text().splitlines()
    assert lines[0] == "# Soak, 2026-12-01"
    assert "- Date: 2026-12-01 14:05 UTC" in lines
    assert "- Command: `python -m bench.soak`" in lines
    assert any(line.startswith("- Machine: ") and "CPU cores" in line for line in lines)
    assert path.read_text().endswith(table)


def test_without_a_command_it_records_how_this_process_was_started(tmp_path: Path) -> None:
    text = publish("x", "X", "body", tmp_path).read_text()
    assert "- Command: `python " in text
