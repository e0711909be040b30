"""The field: what sellers did with the suggestions, read from the feedback table.

``python -m training field-report --table NAME`` prints, per model version, the acceptance
rate (sellers kept the suggested category), the precision of ``confident`` suggestions
(accepted among the confident ones judged), their coverage (confident among those judged)
and the override confusion matrix (suggested -> final category).

``python -m training field-export --table NAME --output DIR`` writes the photos sellers
confirmed or overrode as a dataset folder (``DIR/<final category>/<sha256>.<ext>``, one file
per distinct content) with ``DIR/groups.csv`` (file, product id), which training reads as
extra labelled data (``--extra-data DIR``; :mod:`training.field_data`).
docs/feedback.md explains the loop with a worked example.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training import field_data

COMMANDS = ("field-report", "field-export")
EXPORT_FILE = "export.json"
EXTENSIONS = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"RIFF": ".webp", b"GIF8": ".gif"}


def read_feedback(table: str, client: Any = None) -> list[dict[str, Any]]:
    """Every row of the feedback table that carries a seller's decision, as plain values."""
    from lambda_function import results

    client = client or _client("dynamodb")
    rows = []
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            row = results.from_item(item)
            if "final_category" in row and "category" in row:
                rows.append(row)
    return rows


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The field figures of ``rows`` per model version (and ``all``)."""
    by_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_version[str(row.get("model_version", "unknown"))].append(row)
        by_version["all"].append(row)
    return {version: _figures(group) for version, group in sorted(by_version.items())}


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = len(rows)
    accepted = sum(row["final_category"] == row["category"] for row in rows)
    confident = [row for row in rows if row.get("confident") is True]
    confident_ok = sum(row["final_category"] == row["category"] for row in confident)
    overrides: Counter[tuple[str, str]] = Counter(
        (row["category"], row["final_category"])
        for row in rows
        if row["final_category"] != row["category"]
    )
    per_category: dict[str, dict[str, int]] = defaultdict(lambda: {"judged": 0, "accepted": 0})
    for row in rows:
        per_category[row["category"]]["judged"] += 1
        per_category[row["category"]]["accepted"] += int(row["final_category"] == row["category"])
    confusion: dict[str, dict[str, int]] = defaultdict(dict)
    for (suggested, final), count in sorted(overrides.items()):
        confusion[suggested][final] = count
    return {
        "judged": judged,
        "accepted": accepted,
        "acceptance": _ratio(accepted, judged),
        "confident_judged": len(confident),
        "confident_precision": _ratio(confident_ok, len(confident)),
        "confident_coverage": _ratio(len(confident), judged),
        "unknown_confidence": sum(row.get("confident") is None for row in rows),
        "per_category": dict(sorted(per_category.items())),
        "overrides": dict(confusion),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one block per model version."""
    lines = []
    for version, f in report.items():
        lines.append(f"model {version}: {f['judged']} suggestions judged by sellers")
        lines.append(
            f"  acceptance {_pct(f['acceptance'])} ({f['accepted']}/{f['judged']}); "
            f"confident: precision {_pct(f['confident_precision'])} on coverage "
            f"{_pct(f['confident_coverage'])} ({f['confident_judged']} judged)"
        )
        worst = sorted(
            f["per_category"].items(), key=lambda kv: kv[1]["accepted"] / kv[1]["judged"]
        )
        lines.append(
            "  acceptance by suggested category: "
            + ", ".join(
                f"{c} {_pct(v['accepted'] / v['judged'])} ({v['judged']})" for c, v in worst
            )
        )
        pairs = sorted(
            ((n, s, t) for s, finals in f["overrides"].items() for t, n in finals.items()),
            reverse=True,
        )
        lines.append(
            "  overrides (suggested -> final): "
            + (", ".join(f"{s} -> {t} {n}" for n, s, t in pairs) or "none")
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def export(
    rows: Iterable[dict[str, Any]], output: Path, s3: Any = None, labels: Sequence[str] = ()
) -> dict[str, Any]:
    """Write the judged photos as class folders, one file per distinct content.

    A photo whose content was judged with two different final categories is left out (and
    counted): the sellers disagree. Photos without an ``s3://`` URI (an API answer on
    image bytes or an https URL) are counted as ``no_photo``.
    """
    s3 = s3 or _client("s3")
    counts: Counter[str] = Counter()
    by_hash: dict[str, tuple[str, bytes, str]] = {}
    conflicting: set[str] = set()
    for row in rows:
        if labels and row["final_category"] not in labels:
            counts["unknown_category"] += 1
            continue
        photo = str(row.get("photo", ""))
        if not photo.startswith("s3://"):
            counts["no_photo"] += 1
            continue
        data = _read(s3, photo, str(row.get("etag", "")))
        if data is None:
            counts["unreadable"] += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        product = str(row.get("product_id", ""))
        if digest in by_hash:
            counts["duplicates"] += 1
            if by_hash[digest][0] != row["final_category"]:
                conflicting.add(digest)
            continue
        by_hash[digest] = (row["final_category"], data, product)
    groups = []
    for digest, (category, data, product) in sorted(by_hash.items()):
        if digest in conflicting:
            counts["conflicting"] += 1
            continue
        folder = output / category
        folder.mkdir(parents=True, exist_ok=True)
        name = digest + EXTENSIONS.get(data[:4], EXTENSIONS.get(data[:3], ".img"))
        (folder / name).write_bytes(data)
        groups.append((f"{category}/{name}", product))
        counts["exported"] += 1
    output.mkdir(parents=True, exist_ok=True)
    field_data.write_groups(output, groups)
    summary = {"counts": dict(sorted(counts.items())), "classes": _class_counts(groups)}
    (output / EXPORT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _class_counts(groups: list[tuple[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(path.split("/")[0] for path, _ in groups).items()))


def _read(s3: Any, uri: str, etag: str) -> bytes | None:
    """The photo's bytes (the version the feedback judged, by ETag), or None when gone."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    params = {"Bucket": bucket, "Key": key} | ({"IfMatch": f'"{etag}"'} if etag else {})
    try:
        data: bytes = s3.get_object(**params)["Body"].read()
    except (ClientError, BotoCoreError):
        return None
    return data


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service)


def add_parsers(sub: Any) -> None:
    """Register ``field-report`` and ``field-export`` on ``python -m training``'s parser."""
    report = sub.add_parser("field-report", help="acceptance and overrides from the feedback")
    report.add_argument("--table", required=True, help="the stack's FeedbackTableName")
    report.add_argument("--json", type=Path, default=None, help="also write the figures here")
    out = sub.add_parser("field-export", help="judged photos as extra labelled training data")
    out.add_argument("--table", required=True, help="the stack's FeedbackTableName")
    out.add_argument("--output", type=Path, required=True, help="dataset folder to write")
    out.add_argument(
        "--labels",
        default="",
        help="comma-separated categories to keep (default: every final category)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the field command ``args`` names; the exit code."""
    rows = read_feedback(args.table)
    if args.command == "field-report":
        report = summarise(rows)
        print(format_report(report) if rows else f"no feedback in {args.table} yet")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    summary = export(rows, args.output, labels=labels)
    print(json.dumps(summary), file=sys.stdout)
    return 0
