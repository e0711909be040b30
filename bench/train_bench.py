"""Training benchmark: the 150 px sweep, an augmented run, and the final 299 px model.

Reproduces the headline results with the real ImageNet base and writes them to
``artifacts/bench/training.json`` and ``training.md`` (plus the sweep's table and
learning curves under ``artifacts/bench/training/``). Not a test: it takes ~15-25 min
on 2 CPU cores, most of it the augmented run (every epoch through the base) and the
one-off feature extraction.

    DATA_DIR=... XCEPTION_WEIGHTS=... python bench/train_bench.py [--aug-epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import data, manifest
from training.augment import COURSE
from training.commands import evaluate_run, record_runs
from training.config import RunConfig
from training.train import Workspace, train_run
from training.tune import SweepPlan, sweep, write_table

COURSE_RESULTS = {
    "150": {"val": 0.85, "test": 0.80},
    "299": {"val": "0.894-0.903", "test": "0.898 / 0.903"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    parser.add_argument("--sweep-epochs", type=int, default=10)
    parser.add_argument("--aug-epochs", type=int, default=10)
    parser.add_argument("--final-epochs", type=int, default=20)
    args = parser.parse_args()
    dataset = data.scan(os.environ["DATA_DIR"])
    weights = os.environ["XCEPTION_WEIGHTS"]
    out = args.out / "training"
    ws = Workspace(dataset, weights, out / "sweep-150", args.cache_dir, verbose=0)

    report = {"machine": f"{os.cpu_count()} CPU cores, {platform.processor() or 'x86_64'}"}
    report["features_150"] = _timed_features(ws, 150)
    plan = SweepPlan(aug_epochs=args.aug_epochs)
    start = time.perf_counter()
    rows, best = sweep(ws, RunConfig(image_size=150, epochs=args.sweep_epochs), plan)
    report["sweep_150"] = {
        "seconds": round(time.perf_counter() - start, 1),
        "best": best.name,
        "best_val_accuracy": best.best_val_accuracy,
        "rows": [row.to_dict() for row in rows],
    }
    unique = list({row.result.name: row.result for row in rows}.values())
    record_runs(ws, unique, best.name)
    write_table(rows, best, ws.output_dir)
    aug = next(r for r in rows if r.stage == "aug" and not r.result.config.fast).result
    report["augmented_150"] = {
        "augmentation": COURSE.describe(),
        "epochs": len(aug.history["val_accuracy"]),
        "seconds": round(aug.seconds, 1),
        "seconds_per_epoch": round(aug.seconds / len(aug.history["val_accuracy"]), 1),
        "best_val_accuracy": aug.best_val_accuracy,
    }
    report["test_150"] = evaluate_run(ws, best.name, None)["accuracy"]

    final_ws = Workspace(dataset, weights, out / "final-299", args.cache_dir, verbose=0)
    report["features_299"] = _timed_features(final_ws, 299)
    result = train_run(final_ws, RunConfig(image_size=299, epochs=args.final_epochs))
    record_runs(final_ws, [result], result.name)
    test = evaluate_run(final_ws, result.name, result)
    report["final_299"] = {
        "run": result.name,
        "train_seconds": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test["accuracy"],
        "fast_path_agreement": test["fast_path_agreement"],
        "manifest": str(final_ws.output_dir / manifest.NAME),
    }
    report["course"] = COURSE_RESULTS
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(report, indent=2))
    (args.out / "training.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def _timed_features(ws: Workspace, size: int) -> dict:
    """Feature extraction time (0 when the cache already held them: then it says so)."""
    cached = all(
        p is not None and p.is_file()
        for p in (ws.cache_path(split, size) for split in ("train", "validation", "test"))
    )
    start = time.perf_counter()
    n = sum(len(ws.features(split, size)) for split in ("train", "validation", "test"))
    seconds = time.perf_counter() - start
    return {
        "images": n,
        "seconds": round(seconds, 1),
        "images_per_second": None if cached else round(n / seconds, 1),
        "from_cache": cached,
    }


def markdown(report: dict) -> str:
    sweep = report["sweep_150"]
    lines = [
        f"Machine: {report['machine']}.",
        "",
        "| stage | setting | best val acc | best epoch | train s |",
        "|---|---|---|---|---|",
    ]
    for row in sweep["rows"]:
        setting = f"**{row['setting']}**" if row["run"] == sweep["best"] else row["setting"]
        lines.append(
            f"| {row['stage']} | {setting} | {row['best_val_accuracy']:.3f} | "
            f"{row['best_epoch']}/{row['epochs']} | {row['seconds']} |"
        )
    f150, f299 = report["features_150"], report["features_299"]
    aug, final = report["augmented_150"], report["final_299"]
    lines += [
        "",
        f"- Feature extraction at 150 px: {_features(f150)}; at 299 px: {_features(f299)}.",
        f"- Whole 150 sweep (fast path, {len(sweep['rows'])} settings incl. the augmented "
        f"one): {sweep['seconds']:.0f} s.",
        f"- Augmented run at 150 px ({aug['augmentation']}): {aug['epochs']} epochs in "
        f"{aug['seconds']:.0f} s ({aug['seconds_per_epoch']:.0f} s/epoch), best val "
        f"{aug['best_val_accuracy']:.3f}.",
        f"- Best 150 setting `{sweep['best']}`: val {sweep['best_val_accuracy']:.3f}, "
        f"test {report['test_150']:.3f} (course: val 0.85, test 0.80).",
        f"- Final 299 px model `{final['run']}` (fast path, {final['train_seconds']:.0f} s of "
        f"training): val {final['val_accuracy']:.3f}, **test {final['test_accuracy']:.3f}** "
        f"(course: val 0.894-0.903, test 0.898 / 0.903). Saved .h5 vs fast path on test: "
        f"max |Δlogit| {final['fast_path_agreement']['max_abs_logit_diff']:.1e}, same "
        f"prediction {final['fast_path_agreement']['same_prediction']:.0%}.",
    ]
    return "\n".join(lines) + "\n"


def _features(f: dict) -> str:
    if f["from_cache"]:
        return f"{f['images']} images read from the cache"
    return f"{f['images']} images in {f['seconds']:.0f} s ({f['images_per_second']} img/s)"


if __name__ == "__main__":
    raise SystemExit(main())
