"""Sweeps: learning rate, then inner size, then dropout, then augmentation.

Each stage varies one setting and keeps the best value of the stages before it, as
the course does by hand. The best run of a stage (and of the whole sweep) is chosen by
one rule, :data:`training.config.RULE`, which :func:`pick_best` implements.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from training import plots
from training.augment import Augmentation
from training.config import RULE, STAGES, RunConfig, SweepPlan
from training.runs import RunResult
from training.train import train_run
from training.workspace import Workspace


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    stage: str
    setting: str
    result: RunResult

    def to_dict(self) -> dict:
        history = self.result.history
        return {
            "stage": self.stage,
            "setting": self.setting,
            "run": self.result.name,
            "best_val_accuracy": round(self.result.best_val_accuracy, 4),
            "best_epoch": self.result.best_epoch,
            "epochs": len(history["val_accuracy"]),
            "final_train_accuracy": round(history["accuracy"][-1], 4),
            "final_val_accuracy": round(history["val_accuracy"][-1], 4),
            "trainable_params": self.result.trainable_params,
            "seconds": round(self.result.seconds, 1),
            "path": "fast" if self.result.config.fast else "full",
        }


def pick_best(results: Sequence[RunResult]) -> RunResult:
    """:data:`training.config.RULE`: best validation accuracy, then the smaller top, the
    earlier best epoch, the earlier in ``results``."""
    order = {id(r): i for i, r in enumerate(results)}
    return min(
        results,
        key=lambda r: (-r.best_val_accuracy, r.trainable_params, r.best_epoch, order[id(r)]),
    )


def sweep(ws: Workspace, base: RunConfig, plan: SweepPlan) -> tuple[list[Row], RunResult]:
    """Run the stages in order; return every row and the overall best run."""
    for stage in plan.stages:
        if stage not in STAGES:
            raise ValueError(
                f"Expected sweep stages among {', '.join(STAGES)}. Received: {stage!r}"
            )
    rows: list[Row] = []
    current = base
    best: RunResult | None = None
    done: dict[str, RunResult] = {}  # a setting met again (the previous best) is not rerun
    for stage in plan.stages:
        settings = _settings(stage, current, plan)
        results = []
        for setting, cfg in settings:
            if cfg.run_name not in done:
                done[cfg.run_name] = train_run(ws, cfg)
            result = done[cfg.run_name]
            rows.append(Row(stage, setting, result))
            results.append(result)
        stage_best = pick_best(results)
        plots.learning_curves(
            {row.setting: row.result.history for row in rows if row.stage == stage},
            ws.output_dir / f"curves_{stage}.png",
            f"{stage} sweep at {base.image_size}px: train (dashed) vs validation (solid)",
        )
        current = replace(stage_best.config, name="")
        best = stage_best if best is None else pick_best([best, stage_best])
    if best is None:
        raise ValueError("Expected at least one sweep stage. Received none.")
    return rows, best


def write_table(rows: Sequence[Row], best: RunResult, out: Path) -> dict[str, Path]:
    """``results.md``, ``results.csv`` and ``results.json`` in ``out``."""
    records = [row.to_dict() for row in rows]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    summary = {"rule": RULE, "best": best.name, "rows": records}
    paths["json"].write_text(json.dumps(summary, indent=1))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    paths["md"].write_text(markdown_table(records, best.name))
    return paths


def markdown_table(records: Sequence[dict], best_name: str) -> str:
    columns = ["stage", "setting", "best_val_accuracy", "best_epoch", "final_train_accuracy"]
    columns += ["trainable_params", "seconds", "path"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = [str(record[c]) for c in columns]
        if record["run"] == best_name:
            cells[1] = f"**{cells[1]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nRule: {RULE}.\n"


def _settings(stage: str, cfg: RunConfig, plan: SweepPlan) -> list[tuple[str, RunConfig]]:
    if stage == "lr":
        return [(f"lr={v:g}", replace(cfg, learning_rate=v)) for v in plan.learning_rates]
    if stage == "inner":
        return [(f"inner={v}", replace(cfg, size_inner=v)) for v in plan.inner_sizes]
    if stage == "dropout":
        return [(f"dropout={v:g}", replace(cfg, droprate=v)) for v in plan.droprates]
    epochs = plan.aug_epochs or cfg.epochs
    return [
        ("augmentation=off", replace(cfg, augmentation=Augmentation())),
        (
            f"augmentation=on ({plan.augmentation.describe()})",
            replace(cfg, augmentation=plan.augmentation, epochs=epochs),
        ),
    ]
