"""Benchmarks: ``python -m bench.NAME`` (or ``make bench-NAME``). They are not tests.

Each writes its JSON and scratch output under ``artifacts/bench/`` and its tables as a
dated markdown file under ``docs/results/`` (:func:`bench.results.publish`).
"""
