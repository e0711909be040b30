"""Training benchmark: the 150 px sweep, an augmented run, and the final 299 px model.

Reproduces the headline results with the real ImageNet base and writes them to
``artifacts/bench/training.json`` and ``training.md`` (plus the sweep's table and
learning curves under ``artifacts/bench/training/``) and to
``docs/results/training-DATE.md``. Not a test: about 45 min on 2 CPU cores from a cold
cache: the augmented run (every epoch through the base), the one-off feature/activation
extraction and the fine-tuning epochs. ``--stages`` reruns a subset and keeps the other
stages' figures.

    DATA_DIR=... XCEPTION_WEIGHTS=... python -m bench.train_bench [--stages finetune]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

from bench.results import RESULTS, publish
from training import data, manifest
from training.augment import COURSE
from training.commands import evaluate_run, record_runs
from training.config import RunConfig, SweepPlan
from training.finetune import fine_tune_run
from training.train import train_run
from training.tune import sweep, write_table
from training.workspace import Workspace

COURSE_RESULTS = {
    "150": {"val": 0.85, "test": 0.80},
    "299": {"val": "0.894-0.903", "test": "0.898 / 0.903"},
}


STAGES = ("sweep", "final", "finetune")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the dated markdown goes"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    parser.add_argument("--stages", default=",".join(STAGES), help="a subset reruns only those")
    parser.add_argument("--sweep-epochs", type=int, default=10)
    parser.add_argument("--aug-epochs", type=int, default=10)
    parser.add_argument("--final-epochs", type=int, default=20)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    args = parser.parse_args()
    dataset = data.scan(os.environ["DATA_DIR"])
    weights = os.environ["XCEPTION_WEIGHTS"]
    out = args.out / "training"
    path = args.out / "training.json"
    report = json.loads(path.read_text()) if path.is_file() else {}  # other stages' figures
    report["machine"] = f"{os.cpu_count()} CPU cores, {platform.processor() or 'x86_64'}"
    report["course"] = COURSE_RESULTS

    def workspace(name: str) -> Workspace:
        return Workspace(dataset, weights, out / name, args.cache_dir, verbose=0)

    stages = args.stages.split(",")
    if "sweep" in stages:
        report.update(sweep_150(workspace("sweep-150"), args))
    if "final" in stages:
        report.update(final_299(workspace("final-299"), args))
    if "finetune" in stages:
        report.update(fine_tune_299(workspace("finetune-299"), args))
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    (args.out / "training.md").write_text(markdown(report))
    publish("training", "Training", markdown(report), args.results)
    print(markdown(report))
    return 0


def sweep_150(ws: Workspace, args) -> dict:
    """The course's tuning at 150 px: lr, inner size, dropout, then augmentation."""
    report = {"features_150": _timed_features(ws, 150)}
    start = time.perf_counter()
    base = RunConfig(image_size=150, epochs=args.sweep_epochs)
    rows, best = sweep(ws, base, SweepPlan(aug_epochs=args.aug_epochs))
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
    return report


def final_299(ws: Workspace, args) -> dict:
    """The default `python -m training train`: 299 px, fast path."""
    report = {"features_299": _timed_features(ws, 299)}
    result = train_run(ws, RunConfig(image_size=299, epochs=args.final_epochs))
    record_runs(ws, [result], result.name)
    test = evaluate_run(ws, result.name, result)
    report["final_299"] = {
        "run": result.name,
        "train_seconds": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test["accuracy"],
        "fast_path_agreement": test["fast_path_agreement"],
        "manifest": str(ws.output_dir / manifest.NAME),
    }
    return report


def fine_tune_299(ws: Workspace, args) -> dict:
    """Beyond the course: the 299 head, then block13-14 fine-tuned on cached activations."""
    cfg = RunConfig(
        image_size=299,
        epochs=args.final_epochs,
        fine_tune_from="block13",
        fine_tune_epochs=args.fine_tune_epochs,
    )
    head = train_run(ws, replace(cfg, fine_tune_from=""))
    start = time.perf_counter()
    tuned = fine_tune_run(ws, cfg, head)
    seconds = time.perf_counter() - start  # activation extraction (if not cached) + epochs
    record_runs(ws, [head, tuned], tuned.name)
    test = evaluate_run(ws, tuned.name, tuned)
    return {
        "finetune_299": {
            "run": tuned.name,
            "seconds": round(seconds, 1),
            "fit_seconds": round(tuned.seconds, 1),
            "best_epoch": tuned.best_epoch,
            "val_accuracy": tuned.best_val_accuracy,
            "test_accuracy": test["accuracy"],
            "fast_path_agreement": test["fast_path_agreement"],
            "manifest": str(ws.output_dir / manifest.NAME),
        }
    }


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
    if "finetune_299" in report:
        ft = report["finetune_299"]
        lines.append(
            f"- Beyond the course, `{ft['run']}` (block13-14 fine-tuned on cached activations, "
            f"{ft['seconds'] / 60:.0f} min incl. activation extraction): val "
            f"{ft['val_accuracy']:.3f}, **test {ft['test_accuracy']:.3f}**; saved .h5 vs "
            f"measured: max |Δlogit| {ft['fast_path_agreement']['max_abs_logit_diff']:.1e} "
            f"(float16 cache), same prediction {ft['fast_path_agreement']['same_prediction']:.0%}."
        )
    return "\n".join(lines) + "\n"


def _features(f: dict) -> str:
    if f["from_cache"]:
        return f"{f['images']} images read from the cache"
    return f"{f['images']} images in {f['seconds']:.0f} s ({f['images_per_second']} img/s)"


if __name__ == "__main__":
    raise SystemExit(main())
