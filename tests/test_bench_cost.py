"""bench/cost.py's arithmetic: Lambda's CPU share, the thread count, the price."""

from __future__ import annotations

import pytest

from bench import cost

MEASURED = {
    "prepare_cpu_ms": 10.0,
    "infer_wall_ms_1": 400.0,
    "infer_cpu_ms_1": 400.0,
    "infer_wall_ms_2": 250.0,
    "infer_cpu_ms_2": 480.0,
}


@pytest.fixture
def rows() -> dict[int, dict]:
    return {row["memory_mb"]: row for row in cost.table(MEASURED)}


def test_a_fraction_of_a_vcpu_stretches_one_thread(rows) -> None:
    vcpu = 1024 / 1769
    assert rows[1024]["threads"] == 1
    assert rows[1024]["latency_ms"] == round(10 / vcpu + 400 / vcpu)


def test_one_full_vcpu_runs_one_thread_at_its_measured_speed(rows) -> None:
    assert (rows[1769]["threads"], rows[1769]["latency_ms"]) == (1, 410)


def test_two_threads_are_bounded_by_the_cpu_quota_then_by_their_wall_time(rows) -> None:
    assert rows[2048]["threads"] == 2
    assert rows[2048]["latency_ms"] == round(10 + 480 / (2048 / 1769))
    assert rows[3538]["latency_ms"] == (10 + 250)  # 2 vCPU: 480/2 < 250 wall


def test_cost_is_requests_plus_gb_seconds(rows) -> None:
    row = rows[3008]
    seconds = row["billed_ms"] / 1000
    expected = 0.20 + 1e6 * 3008 / 1024 * seconds * cost.PRICES["x86_64"]
    assert row["usd_per_million_x86_64"] == pytest.approx(expected, abs=0.01)
    assert row["usd_per_million_arm64"] < row["usd_per_million_x86_64"]
