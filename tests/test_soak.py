"""A short soak in CI: ``bench.soak`` with 300 invocations and 4 parallel clients.

It asserts what does not depend on the machine's speed: no 5xx, no leaked file
descriptors or threads, resident memory within 10% after warm-up, every good case
answered 200 and every hostile one 4xx. The long run (5,000 invocations) is
``make bench-soak``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import soak


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    config = soak.SoakConfig(invocations=300, warmup=100, clients=4, requests_per_client=15)
    return soak.run(config)


def test_the_short_soak_answers_no_5xx(report) -> None:
    assert report["soak"]["invocations"] == 300
    assert "5xx" not in report["soak"]["statuses"]
    assert report["concurrency"]["errors_5xx"] == 0
    assert report["concurrency"]["requests"] == 4 * 15


def test_the_short_soak_leaks_no_fds_threads_or_memory(report) -> None:
    soak = report["soak"]
    assert soak["grown"]["fds"] <= 0 and soak["grown"]["threads"] <= 0, soak["grown"]
    assert soak["rss_growth"] < 0.10
    assert report["passed"]


def test_good_cases_answer_200_and_hostile_ones_4xx(report) -> None:
    cases = report["soak"]["cases"]
    for name, statuses in cases.items():
        if name.startswith("good") or name == "batch":
            assert statuses == [200], name
        else:
            assert statuses and all(400 <= s < 500 for s in statuses), (name, statuses)
