"""``bench.results.publish``: one dated markdown file per run, with its command, commit and
machine."""

from __future__ import annotations

import subprocess
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


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=True).stdout


def a_repository(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    (repo / "bench.py").write_text("print(1)\n")
    git(repo, "add", "bench.py")
    git(repo, "commit", "--quiet", "-m", "bench")
    return repo, git(repo, "rev-parse", "HEAD").strip()


def test_a_result_names_the_commit_it_ran_at(tmp_path: Path) -> None:
    repo, head = a_repository(tmp_path)
    text = publish("x", "X", "body", tmp_path / "results", repo=repo).read_text()
    assert f"- Commit: `{head}`\n" in text


def test_uncommitted_changes_mark_the_commit_dirty(tmp_path: Path) -> None:
    repo, head = a_repository(tmp_path)
    (repo / "bench.py").write_text("print(2)\n")
    text = publish("x", "X", "body", tmp_path / "results", repo=repo).read_text()
    assert f"- Commit: `{head}`, dirty (uncommitted changes)\n" in text


def test_outside_a_git_checkout_the_commit_is_unknown_and_the_result_still_written(
    tmp_path: Path,
) -> None:
    text = publish("x", "X", "body", tmp_path / "results", repo=tmp_path).read_text()
    assert f"- Commit: unknown (no git checkout at {tmp_path})" in text
    assert text.endswith("body\n")
