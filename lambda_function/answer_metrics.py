"""The answer distribution as metrics: what the model says, per model version (drift).

For every request (an API call, an upload batch) one EMF line per (model version, category)
answered: ``Answers``, ``ConfidentAnswers`` and, once answers carry the ``out_of_catalogue``
field, ``OutOfCatalogueAnswers``. CloudWatch sums them per dimension set:

- ``Function, ModelVersion, Category``: the category mix of each model version;
- ``Function, ModelVersion``: its confident rate (and out-of-catalogue rate);
- ``Function``: the same for all traffic, which the drift alarms of template.yaml read
  (an alarm needs fixed dimensions; a model version changes with every deploy).

docs/operations.md says what an operator does when a drift alarm fires.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from lambda_function import observe

OUT_OF_CATALOGUE = "out_of_catalogue"
"""The answer's field (a bool) that says a photo is probably none of the categories."""

DIMENSIONS = [["Function"], ["Function", "ModelVersion"], ["Function", "ModelVersion", "Category"]]


def predictions(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The successful predictions of one answer payload (a single one, or a batch's)."""
    if "results" in payload:
        return [r for r in payload["results"] if isinstance(r, dict) and "category" in r]
    return [payload] if "category" in payload else []


def lines(
    answers: Iterable[dict[str, Any]], source: str, environ: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The EMF documents of ``answers`` (each one prediction in the API's shape)."""
    groups: dict[tuple[str, str], Counter[str]] = {}
    for answer in answers:
        key = (str(answer.get("model", {}).get("version") or "unknown"), str(answer["category"]))
        counts = groups.setdefault(key, Counter())
        counts["Answers"] += 1
        counts["ConfidentAnswers"] += int(bool(answer.get("confident")))
        if OUT_OF_CATALOGUE in answer:
            counts["OutOfCatalogueAnswers"] += int(bool(answer[OUT_OF_CATALOGUE]))
            counts["CatalogueChecked"] += 1
    documents = []
    for (version, category), counts in sorted(groups.items()):
        names = ["Answers", "ConfidentAnswers"]
        if counts["CatalogueChecked"]:
            names.append("OutOfCatalogueAnswers")
        directive = {
            "Dimensions": DIMENSIONS,
            "Metrics": [{"Name": name, "Unit": observe.COUNT} for name in names],
        }
        line: dict[str, Any] = {"event": "answers", "source": source}
        members: dict[str, Any] = {"ModelVersion": version, "Category": category}
        members |= {name: counts[name] for name in names}
        documents.append(observe.document(line, [directive], members, environ))
    return documents


def emit(answers: Iterable[dict[str, Any]], source: str) -> None:
    """Print the answer-distribution lines of ``answers`` (nothing when there are none)."""
    for document in lines(answers, source):
        observe.emit(document)
