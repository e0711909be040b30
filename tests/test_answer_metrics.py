"""The answer distribution as EMF lines (drift): per model version and category, with the
confident and out-of-catalogue counts, from a real request through the handler."""

from __future__ import annotations

import json
from typing import Any

from lambda_function import answer_metrics, handler
from tests.lambda_testing import BLUE, LABELS, RED, FakeContext, b64, image_bytes


def answers(version: str, *categories: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"category": c, "confident": c == "pants", "model": {"version": version}, **extra}
            for c in categories]  # fmt: skip


def declared(line: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def test_one_line_per_model_version_and_category_with_its_counts() -> None:
    lines = answer_metrics.lines(
        answers("v1", "pants", "pants", "hat") + answers("v2", "pants"), "direct", {}
    )
    got = [(x["ModelVersion"], x["Category"], x["Answers"], x["ConfidentAnswers"]) for x in lines]
    assert got == [("v1", "hat", 1, 0), ("v1", "pants", 2, 2), ("v2", "pants", 1, 1)]
    dimensions = lines[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert ["Function", "ModelVersion", "Category"] in dimensions and ["Function"] in dimensions


def test_the_out_of_catalogue_rate_is_counted_once_answers_carry_the_field() -> None:
    (without,) = answer_metrics.lines(answers("v1", "hat"), "direct", {})
    assert "OutOfCatalogueAnswers" not in declared(without)
    flagged = answers("v1", "hat", "hat", out_of_catalogue=True)
    flagged[1]["out_of_catalogue"] = False
    (line,) = answer_metrics.lines(flagged, "direct", {})
    assert "OutOfCatalogueAnswers" in declared(line) and line["OutOfCatalogueAnswers"] == 1


def test_requests_through_the_handler_print_their_answer_mix(function_env, tiny_model, capsys):
    function_env(MODEL_PATH=tiny_model, FEEDBACK_TABLE=None)
    handler.get_service()
    capsys.readouterr()
    event = {"image": b64(image_bytes(RED))}
    handler.lambda_handler(event, FakeContext())
    handler.lambda_handler({"image": b64(image_bytes(BLUE))}, FakeContext())
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    mix = [(x["Category"], x["Answers"]) for x in lines if x.get("event") == "answers"]
    assert mix == [(LABELS[0], 1), (LABELS[2], 1)]
    assert all(x["Function"] == "local" for x in lines if x.get("event") == "answers")
