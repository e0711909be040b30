"""The PyTorch and Keras paths side by side: CV accuracy, latency, then one report.

    # k-fold CV of the head on each path's own cached 299 px features (train + validation,
    # the same stratified folds and settings); each in its framework's venv:
    .venv-torch/bin/python -m bench.pytorch_vs_keras cv --framework torch
    .venv/bin/python -m bench.pytorch_vs_keras cv --framework keras
    # served latency, batch 1, the Lambda's model loader, models interleaved:
    python -m bench.pytorch_vs_keras latency "Keras fp32=artifacts/model/model.onnx" ...
    # the table: manifests, export reports and the JSONs above
    python -m bench.pytorch_vs_keras report
    # test accuracy over several seeds, through each framework's own `train` command:
    .venv-torch/bin/python -m bench.pytorch_vs_keras seeds --framework torch
    .venv/bin/python -m bench.pytorch_vs_keras seeds --framework keras
    python -m bench.pytorch_vs_keras seeds-report

Figures go to ``artifacts/bench/pytorch_vs_keras-*.json``; ``report`` publishes the table
as ``docs/results/pytorch-vs-keras-DATE.md`` (:func:`bench.results.publish`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import SCRATCH, publish

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / SCRATCH

FOLDS, SEED, EPOCHS = 5, 1, 10
# Student's t, 97.5% quantile, by degrees of freedom (above 10: 10's, slightly conservative).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}  # fmt: skip
SETTINGS: dict[str, Any] = {"image_size": 299, "learning_rate": 1e-3, "size_inner": 100,
                            "droprate": 0.2}  # fmt: skip


def folds(targets: np.ndarray, k: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """Stratified fold index per sample: each class shuffled (seeded), dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(targets), dtype=np.int64)
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        fold[members] = np.arange(len(members)) % k
    return fold


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def cv(framework: str, cache: Path) -> dict[str, Any]:
    """Out-of-fold accuracy of the head trained ``EPOCHS`` epochs on each fold's rest."""
    x, y = _features(framework, cache)
    fold = folds(y)
    fit = _torch_head if framework == "torch" else _keras_head
    correct, per_fold, seconds = 0, [], []
    for k in range(FOLDS):
        train, held = fold != k, fold == k
        clock = time.process_time()
        predicted = fit(x[train], y[train], x[held], y[held])
        seconds.append((time.process_time() - clock) / EPOCHS)
        hits = int((predicted == y[held]).sum())
        correct += hits
        per_fold.append(hits / int(held.sum()))
        print(f"{framework} fold {k}: {per_fold[-1]:.4f}", flush=True)
    low, high = wilson(correct, len(y))
    return {
        "framework": framework,
        "folds": FOLDS,
        "seed": SEED,
        "epochs": EPOCHS,
        "settings": SETTINGS,
        "n_images": len(y),
        "accuracy": correct / len(y),
        "wilson95": [low, high],
        "per_fold": per_fold,
        "fold_sd": statistics.stdev(per_fold),
        "head_cpu_s_per_epoch": statistics.median(seconds),
    }


def _features(framework: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each path's own cached pooled features of train + validation, and their labels."""
    from training.data import scan

    dataset = scan(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    y = np.concatenate([dataset["train"].targets, dataset["validation"].targets])
    parts: list[np.ndarray | None] = []
    for split in ("train", "validation"):
        if framework == "torch":
            pattern = f"torch-pooled-299-*-{dataset.fingerprint[:16]}/{split}/*.npy"
            shards = sorted(cache.glob(pattern))
            parts.append(np.concatenate([np.load(p) for p in shards]) if shards else None)
        else:
            found = sorted(cache.glob(f"features-299-*-{dataset.fingerprint[:16]}-{split}.npy"))
            parts.append(np.load(found[0]) if found else None)
    if any(
        p is None or len(p) != len(dataset[s])
        for p, s in zip(parts, ("train", "validation"), strict=True)
    ):
        raise SystemExit(f"Expected {framework}'s cached 299 px features in {cache}. Missing")
    return np.concatenate([p for p in parts if p is not None]).astype(np.float32), y


def _torch_head(x_train, y_train, x_test, y_test) -> np.ndarray:
    import torch

    from torch_training.train import fit_head
    from training.config import RunConfig

    cfg = RunConfig(**SETTINGS, epochs=EPOCHS, seed=SEED)
    head, _ = fit_head(x_train, y_train, x_test, y_test, cfg, int(y_train.max()) + 1)
    with torch.inference_mode():
        return head(torch.from_numpy(x_test)).argmax(1).numpy()


def _keras_head(x_train, y_train, x_test, y_test) -> np.ndarray:
    """The Keras path's top (``training.model``'s layers), trained the same way."""
    import keras

    from training.model import compile_model

    keras.utils.set_random_seed(SEED)
    n = int(y_train.max()) + 1
    inputs = keras.Input((x_train.shape[1],))
    hidden = keras.layers.Dense(SETTINGS["size_inner"], activation="relu")(inputs)
    hidden = keras.layers.Dropout(SETTINGS["droprate"])(hidden)
    top = keras.Model(inputs, keras.layers.Dense(n)(hidden))
    compile_model(top, SETTINGS["learning_rate"])
    onehot = np.eye(n, dtype=np.float32)
    top.fit(x_train, onehot[y_train], batch_size=32, epochs=EPOCHS, verbose=0)
    return top.predict(x_test, verbose=0).argmax(1)


def seeds(framework: str, seed_list: list[int], output_dir: Path, cache: Path) -> dict[str, Any]:
    """Test accuracy of the default settings trained once per seed by ``<framework> train``.

    One seed's test accuracy moves by a point or more (372 photos, and the best epoch is
    picked on 341 validation photos), so the paths are compared on the mean over seeds.
    """
    if framework == "torch":
        from torch_training.cli import main as train_main

        extra = ["--engine", "onnxruntime"]
    else:
        from training.cli import main as train_main

        extra = []
    root = output_dir / framework
    for seed in seed_list:
        argv = ["train", "--seed", str(seed), "--name", f"seed{seed}", "--output-dir", str(root)]
        if train_main([*argv, "--cache-dir", str(cache), *extra]) != 0:
            raise SystemExit(f"{framework} train --seed {seed} failed")
    runs = {r["name"]: r for r in json.loads((root / "manifest.json").read_text())["runs"]}
    test = {seed: runs[f"seed{seed}"]["test"]["accuracy"] for seed in seed_list}
    return {
        "framework": framework,
        "settings": SETTINGS,
        "test_accuracy": test,
        "best_epoch": {seed: runs[f"seed{seed}"]["best_epoch"] for seed in seed_list},
        "mean": statistics.mean(test.values()),
        "sd": statistics.stdev(test.values()) if len(test) > 1 else 0.0,
    }


def seeds_report() -> str:
    """Per-seed test accuracy of both paths, their means, and the gap with a 95% interval."""
    found = {f: _json(f"pytorch_vs_keras-seeds-{f}.json") for f in ("keras", "torch")}
    keras, torch = (list(found[f]["test_accuracy"].values()) for f in ("keras", "torch"))
    gap = statistics.mean(keras) - statistics.mean(torch)
    # Welch's interval for the difference of the two means (seeds are independent runs).
    a, b = statistics.variance(keras) / len(keras), statistics.variance(torch) / len(torch)
    df = (a + b) ** 2 / (a**2 / (len(keras) - 1) + b**2 / (len(torch) - 1))
    half = T975[min(int(df), max(T975))] * math.sqrt(a + b)
    lines = [
        "The default settings (299 px, Adam 1e-3, inner 100, dropout 0.2, batch 32, 20 epochs, "
        "best epoch by validation accuracy, frozen base, no augmentation) trained once per "
        "seed by each framework's own `train` command on its own cached features; test "
        "accuracy of the best checkpoint on the 372 test photos.",
        "",
        "| seed | Keras | PyTorch |",
        "|---:|---:|---:|",
        *[
            f"| {seed} | {found['keras']['test_accuracy'][seed]:.4f} | "
            f"{found['torch']['test_accuracy'].get(seed, float('nan')):.4f} |"
            for seed in found["keras"]["test_accuracy"]
        ],
        f"| **mean ± sd** | **{statistics.mean(keras):.4f} ± {statistics.stdev(keras):.4f}** | "
        f"**{statistics.mean(torch):.4f} ± {statistics.stdev(torch):.4f}** |",
        "",
        f"Keras minus PyTorch, mean over seeds: **{gap * 100:+.2f} points** (95% Welch interval "
        f"[{(gap - half) * 100:+.2f}, {(gap + half) * 100:+.2f}], {df:.1f} degrees of freedom).",
        "",
    ]
    return "\n".join(lines)


def latency(models: dict[str, Path], calls: int, threads: int) -> dict[str, Any]:
    """Batch-1 inference per model through the Lambda's own model loader, interleaved."""
    from lambda_function.model import Classifier

    loaded = {
        name: Classifier.load(path, intra_op_threads=threads) for name, path in models.items()
    }
    size = next(iter(loaded.values())).metadata.image_size
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    for model in loaded.values():
        model.predict(x)
    wall: dict[str, list[float]] = {n: [] for n in loaded}
    cpu: dict[str, list[float]] = {n: [] for n in loaded}
    for _ in range(calls):
        for name, model in loaded.items():
            c0, w0 = _cpu(), time.perf_counter()
            model.predict(x)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(_cpu() - c0)
    return {
        "calls": calls,
        "threads": threads,
        "image_size": size,
        "models": {
            name: {
                "path": str(models[name]),
                "size_bytes": models[name].stat().st_size,
                "wall_ms_p50": 1000 * statistics.median(wall[name]),
                "wall_ms_min": 1000 * min(wall[name]),
                "cpu_ms_p50": 1000 * statistics.median(cpu[name]),
            }
            for name in loaded
        },
    }


def report(keras_training: Path, torch_training: Path, keras_model: Path, torch_model: Path) -> str:
    """The side-by-side markdown table from what each path wrote and the JSONs above."""
    runs = {"Keras": _best(keras_training), "PyTorch": _best(torch_training)}
    exports = {
        "Keras": json.loads((keras_model / "report.json").read_text()),
        "PyTorch": json.loads((torch_model / "report.json").read_text()),
    }
    sizes = {"Keras": _keras_sizes(exports["Keras"]), "PyTorch": _torch_sizes(exports["PyTorch"])}
    cvs = {f: _json(f"pytorch_vs_keras-cv-{f.lower().replace('pytorch', 'torch')}.json")
           for f in runs}  # fmt: skip
    latency_file = OUT / "pytorch_vs_keras-latency.json"
    lat = json.loads(latency_file.read_text())["models"] if latency_file.is_file() else {}

    def served(name: str) -> str:
        if name not in lat:
            return "not measured"
        return f"{lat[name]['wall_ms_p50']:.0f} / {lat[name]['cpu_ms_p50']:.0f}"

    rows = [
        ("validation accuracy, best epoch", lambda f: f"{runs[f]['best_val_accuracy']:.4f} "
         f"(epoch {runs[f]['best_epoch']})"),
        ("test accuracy (372 photos), best checkpoint", lambda f: _interval(runs[f]["test"])),
        (f"{FOLDS}-fold CV accuracy, train+validation ({EPOCHS} epochs, 95% Wilson)",
         lambda f: f"{cvs[f]['accuracy']:.4f} [{cvs[f]['wilson95'][0]:.3f}, "
         f"{cvs[f]['wilson95'][1]:.3f}], fold sd {cvs[f]['fold_sd']:.3f}"),
        ("head epoch on cached features, wall s (training run)",
         lambda f: f"{runs[f]['train_seconds'] / runs[f]['config']['epochs']:.2f}"),
        ("head epoch on cached features, CPU s (CV folds, median)",
         lambda f: f"{cvs[f]['head_cpu_s_per_epoch']:.2f}"),
        ("ONNX fp32 / int8 size, MB",
         lambda f: f"{sizes[f][0] / 1e6:.1f} / {sizes[f][1] / 1e6:.1f}"),
        ("int8 test accuracy (fp32)", lambda f: sizes[f][2]),
        ("served fp32, batch 1, 2 threads: wall p50 / CPU p50, ms", lambda f: served(f + " fp32")),
        ("served int8, batch 1, 2 threads: wall p50 / CPU p50, ms", lambda f: served(f + " int8")),
    ]  # fmt: skip
    lines = [
        "Both paths trained with the same settings on 2 shared CPU cores (other jobs "
        "running: wall times are pessimistic, ratios hold). Settings: "
        f"{SETTINGS['image_size']} px, Adam lr {SETTINGS['learning_rate']:g}, inner "
        f"{SETTINGS['size_inner']}, dropout {SETTINGS['droprate']:g}, batch 32, 20 epochs, "
        "seed 1, frozen base, no augmentation; best epoch by validation accuracy.",
        "",
        "| | Keras | PyTorch |",
        "|---|---|---|",
        *[f"| {label} | {fn('Keras')} | {fn('PyTorch')} |" for label, fn in rows],
        "",
    ]
    return "\n".join(lines)


def _best(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    return next(r for r in manifest["runs"] if r["name"] == manifest["best_run"])


def _interval(test: dict) -> str:
    n = test["n_images"]
    low, high = wilson(round(test["accuracy"] * n), n)
    return f"{test['accuracy']:.4f} [{low:.3f}, {high:.3f}]"


def _keras_sizes(report: dict) -> tuple[int, int, str]:
    int8 = report["variants"]["int8"]
    return report["variants"]["fp32"]["size_bytes"], int8["size_bytes"], _int8(int8)


def _torch_sizes(report: dict) -> tuple[int, int, str]:
    return report["size_bytes"], report["int8"]["size_bytes"], _int8(report["int8"])


def _int8(int8: dict) -> str:
    verdict = "accepted" if int8["accepted"] else "rejected"
    return f"{int8['accuracy']['test']:.4f} ({int8['accuracy_fp32']['test']:.4f}), {verdict}"


def _json(name: str) -> dict:
    return json.loads((OUT / name).read_text())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cv")
    c.add_argument("--framework", choices=("torch", "keras"), required=True)
    c.add_argument("--cache", type=Path, default=REPO / "artifacts" / "cache")
    lat = sub.add_parser("latency")
    lat.add_argument("models", nargs="+", help="name=path.onnx")
    lat.add_argument("--calls", type=int, default=30)
    lat.add_argument("--threads", type=int, default=2)
    sd = sub.add_parser("seeds")
    sd.add_argument("--framework", choices=("torch", "keras"), required=True)
    sd.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    sd.add_argument("--output-dir", type=Path, default=OUT / "seeds")
    sd.add_argument("--cache", type=Path, default=REPO / "artifacts" / "cache")
    sub.add_parser("seeds-report")
    rep = sub.add_parser("report")
    rep.add_argument("--keras", type=Path, default=REPO / "artifacts" / "training")
    rep.add_argument("--torch", type=Path, default=REPO / "artifacts" / "torch" / "training")
    rep.add_argument("--keras-model", type=Path, default=REPO / "artifacts" / "model")
    rep.add_argument("--torch-model", type=Path, default=REPO / "artifacts" / "torch" / "model")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.command == "report":
        text = report(args.keras, args.torch, args.keras_model, args.torch_model)
        path = publish("pytorch-vs-keras", "PyTorch vs Keras, the same settings", text)
        print(f"{path}\n{text}")
        return 0
    if args.command == "seeds-report":
        text = seeds_report()
        path = publish("pytorch-vs-keras-seeds", "PyTorch vs Keras over seeds", text)
        print(f"{path}\n{text}")
        return 0
    if args.command == "seeds":
        result = seeds(args.framework, args.seeds, args.output_dir, args.cache)
        name = f"pytorch_vs_keras-seeds-{args.framework}.json"
    elif args.command == "cv":
        result = cv(args.framework, args.cache)
        name = f"pytorch_vs_keras-cv-{args.framework}.json"
    else:
        models = dict(item.split("=", 1) for item in args.models)
        result = latency({k: Path(v) for k, v in models.items()}, args.calls, args.threads)
        name = "pytorch_vs_keras-latency.json"
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (OUT / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
