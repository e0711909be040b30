"""The cross-validation report: JSON, a markdown table, a reliability diagram per method."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from training import calibration


def write(report: dict, out: Path) -> dict[str, Path]:
    """``cv.json`` and ``cv.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "cv.json", "md": out / "cv.md"}
    paths["json"].write_text(json.dumps(report, indent=1))
    paths["md"].write_text(markdown(report))
    return paths


def markdown(report: dict) -> str:
    """The table of every method tried, then how it was measured and what was chosen."""
    rows = report["methods"]
    lines = [
        f"# Cross-validation: {report['k']}-fold, seed {report['seed']}, "
        f"{report['n_photos']} photos ({report['image_size']} px features)",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['created_at']}",
        "",
        "| method | top-1 (95% CI) | gain vs today (95% CI) | top-3 | ECE raw | "
        "ECE calibrated (95% CI) | T | epochs | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        is_reference = r["method"] == report["reference"]
        gain_cell = "—" if is_reference else _pm(r.get("gain_vs_reference"), r["gain_ci"], True)
        epochs = r["epochs"] if r["epochs"] is not None else "best on 10% holdout"
        name = f"**{r['method']}**" if r["method"] == report["chosen"] else r["method"]
        lines.append(
            f"| {name} | {_pm(r['accuracy'], r['accuracy_ci'])} | {gain_cell} | "
            f"{r['top3']:.3f} | {r['ece']:.3f} | "
            f"{_pm(r['ece_calibrated'], r['ece_calibrated_ci'])} | {r['temperature']:.2f} | "
            f"{epochs} | {_kept(r, report)} |"
        )
    chosen = next(r for r in rows if r["method"] == report["chosen"])
    lines += [
        "",
        "Methods: " + "; ".join(f"`{r['method']}`: {r['description']}" for r in rows) + ".",
        "",
        f"Chosen: **{chosen['method']}** — OOF top-1 "
        f"{_pm(chosen['accuracy'], chosen['accuracy_ci'])}, "
        f"top-3 {_pm(chosen['top3'], chosen['top3_ci'])}, ECE after temperature scaling "
        f"{_pm(chosen['ece_calibrated'], chosen['ece_calibrated_ci'])} (raw {chosen['ece']:.3f}), "
        f"NLL {chosen['nll']:.3f} → {chosen['nll_calibrated']:.3f}; temperature "
        f"{chosen['temperature']:.3f}; `confident` when the top probability ≥ "
        f"{chosen['confidence_threshold']:.3f}: precision {chosen['confident_precision']:.3f} on "
        f"{chosen['confident_coverage']:.1%} of photos (cross-fitted, on folds that did not set "
        f"it: {chosen['confident_precision_held_out']:.3f} on "
        f"{chosen['confident_coverage_held_out']:.1%}).",
        "",
        "How it is measured: every labelled photo (train + validation + test) is predicted once, "
        "by the head of the fold that never saw it. Epoch counts, temperatures and thresholds "
        "used for a fold's predictions are fitted on the other folds' predictions. Intervals: "
        "95% percentile bootstrap over photos (2,000 resamples); gains: paired bootstrap of the "
        "per-photo difference. A method is kept only if its gain's interval is above zero.",
        "",
    ]
    return "\n".join(lines)


def reliability_diagram(probs: np.ndarray, targets: np.ndarray, path: Path, title: str) -> Path:
    """Accuracy vs confidence per bin (10 bins), photo counts underneath; ECE in the title."""
    rel = calibration.reliability(probs, targets)
    centres = (rel.edges[:-1] + rel.edges[1:]) / 2
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    used = rel.counts > 0
    ax.bar(centres[used], rel.accuracy[used], width=0.1, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot(centres[used], rel.confidence[used], "ro", ms=4, label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nECE {rel.ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    counts.bar(centres, rel.counts, width=0.1, edgecolor="k", color="grey")
    counts.set_xlabel("top probability")
    counts.set_ylabel("photos")
    counts.set_xlim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pm(value: float | None, ci: Sequence[float], sign: bool = False) -> str:
    if value is None:
        return "—"
    fmt = "+.3f" if sign else ".3f"
    return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _kept(row: dict, report: dict) -> str:
    if row["method"] == report["reference"]:
        return "reference"
    return "yes" if row.get("kept") else "no"
