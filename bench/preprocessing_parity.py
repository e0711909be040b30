"""Measure how far the numpy preprocessing is from Keras, per image size and mode.

    python -m bench.preprocessing_parity   # needs DATA_DIR

Writes artifacts/bench/parity.json and docs/results/parity-DATE.md.

For every validation image and every synthetic mode of ``tests/images.py``: max |Δ|
between ``lambda_function.preprocessing.preprocess`` and Keras' ``load_img`` +
``preprocess_input`` on the corrected image (the contract, must be <= 1e-6), and, for
the cases we deliberately correct, how far raw ``load_img`` is from what we feed the
model (mean |Δ|: what the correction is worth).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.results import SCRATCH, publish
from lambda_function.preprocessing import preprocess
from tests.images import cases
from tests.parity import SIZES, keras_input, max_abs_diff


def measure(data_dir: Path) -> list[dict]:
    rows = []
    validation = sorted((data_dir / "validation").glob("*/*"))
    for size in SIZES:
        diffs = [max_abs_diff(p.read_bytes(), p.read_bytes(), size) for p in validation]
        rows.append(row(f"validation split ({len(validation)} JPEGs)", size, max(diffs), None))
        for case in cases():
            corrected = case.data != case.reference
            raw = mean_abs_diff(case.data, size) if corrected else None
            rows.append(row(case.name, size, max_abs_diff(case.data, case.reference, size), raw))
    return rows


def mean_abs_diff(data: bytes, size: int) -> float:
    """Mean |Δ| between what we feed the model and raw ``load_img`` on the same bytes."""
    return float(np.mean(np.abs(preprocess(data, size) - keras_input(data, size))))


def row(name: str, size: int, diff: float, raw: float | None) -> dict:
    return {"input": name, "size": size, "max_abs_diff": diff, "raw_load_img_diff": raw}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| input | max \\|Δ\\| at 150 | max \\|Δ\\| at 299 | raw `load_img` mean \\|Δ\\| (299) |",
        "|---|---|---|---|",
    ]
    by_name: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_name.setdefault(r["input"], {})[r["size"]] = r
    for name, sizes in by_name.items():
        raw = sizes[299]["raw_load_img_diff"]
        lines.append(
            f"| {name} | {sizes[150]['max_abs_diff']:.1e} | {sizes[299]['max_abs_diff']:.1e} "
            f"| {'—' if raw is None else f'{raw:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    data_dir = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    rows = measure(data_dir)
    worst = max(r["max_abs_diff"] for r in rows)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "worst": worst,
        "numpy": np.__version__,
        "rows": rows,
    }
    (SCRATCH / "parity.json").write_text(json.dumps(report, indent=2))
    published = publish("parity", "Preprocessing parity", markdown(rows))
    print(markdown(rows))
    print(f"worst max |Δ| = {worst:.1e}; wrote {SCRATCH}/parity.json and {published}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
