"""Does int8 cost accuracy? Cross-validated, on the same folds as ``python -m training cv``.

The int8 model's base is cut out of the served ``serve.onnx`` (int8 when it passed its gate;
``--model`` names another) at the head's first matrix product: the pooled 2048-d features
as int8 inference computes them. Every photo goes through it once, with the serving
preprocessing. Then, per fold, the chosen method's head is trained on the fp32 features
of the other folds (for the fold's cross-fitted epoch count) and predicts the held-out
photos twice: from the fp32 features and from the int8 features. The difference is
paired, photo by photo.

The base is frozen and identical in every checkpoint, so the int8 base of any converted
model stands for the shipped one; its quantisation ranges come from the activations of
calibration photos, which the head does not change.

A fine-tuning method changes the base's top blocks in every fold, so no one int8 base
stands for it: each fold's whole network is converted and quantised instead
(:mod:`bench.cv_int8_tuned`, about 15 minutes per fold on 2 cores).

    python -m bench.cv_int8      # make run's model and CV report (artifacts/cv-ship)
    python -m bench.cv_int8 --cv-dir artifacts/cv --method today
    python -m bench.cv_int8 --cv-dir artifacts/cv-swa --method ft-block13-swa
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.results import SCRATCH, publish
from lambda_function.config import SERVED_MODEL
from training.folds import bootstrap_interval, fold_indices

ROOT = Path(__file__).resolve().parent.parent


def pooled_tensor(model) -> str:
    """The float input of the head's first matrix product: the pooled base features."""
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            return node.input[0]
    raise ValueError("Expected a MatMul or Gemm (the dense head) in the model. Found none.")


def base_model(source: Path, target: Path) -> Path:
    """``source`` cut at its pooled features (input ``input``, output the pooled tensor)."""
    import onnx
    from onnx.utils import extract_model

    model = onnx.load(str(source))
    if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        raise ValueError(
            f"Expected an int8 model (QuantizeLinear nodes). Received: {source}, fp32 "
            "(convert serves fp32 when int8 failed its gate): pass --model an int8 model"
        )
    name = pooled_tensor(model)
    extract_model(str(source), str(target), ["input"], [name])
    return target


def features(
    session, files: list[Path], image_size: int, batch: int = 16, desc: str = "int8 features"
) -> np.ndarray:
    """The session's first output for ``files``, decoded and scaled as the Lambda does."""
    from lambda_function.preprocessing import load_pixels, scale

    name = session.get_inputs()[0].name
    out = []
    started = time.perf_counter()
    for start in range(0, len(files), batch):
        pixels = np.stack(
            [load_pixels(p.read_bytes(), image_size) for p in files[start : start + batch]]
        )
        (pooled,) = session.run(None, {name: scale(pixels)})
        out.append(np.asarray(pooled, dtype=np.float32).reshape(len(pixels), -1))
        done = start + len(pixels)
        rate = done / (time.perf_counter() - started)
        print(f"\r{desc} {done}/{len(files)} ({rate:.1f} img/s)", end="", flush=True)
    print()
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cv_int8", description=__doc__)
    parser.add_argument("--model", type=Path, default=SERVED_MODEL)
    parser.add_argument("--cv-dir", type=Path, default=Path("artifacts/cv-ship"))
    parser.add_argument("--method", default=None, help="default: the report's chosen method")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "")))
    parser.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    parser.add_argument(
        "--weights",
        default=os.environ.get("XCEPTION_WEIGHTS", "imagenet"),
        help="the base weights the CV used (default: $XCEPTION_WEIGHTS or imagenet; none: random)",
    )
    args = parser.parse_args(argv)
    from training.methods import METHODS

    report = json.loads((args.cv_dir / "cv.json").read_text())
    name = args.method or report["chosen"]
    if name not in {row["method"] for row in report["methods"]}:
        parser.error(f"Expected a method the CV report in {args.cv_dir} ran. Received: {name!r}")
    method = METHODS[name]
    weights = None if str(args.weights).lower() == "none" else args.weights
    if method.fine_tune:
        from bench.cv_int8_tuned import paired_logits

        got = paired_logits(method, report, args.cv_dir, args.data_dir, args.cache_dir, weights)
        targets, fp32_pred, int8_pred = got["targets"], got["fp32"].argmax(1), got["int8"].argmax(1)
        extra, how = _tuned_checks(got, np.load(args.cv_dir / f"oof-{name}.npy")), TUNED
    else:
        targets, fp32_pred, int8_pred, gap = head_only(method, report, args, weights)
        extra, how = {"max_abs_feature_diff": gap}, HEAD_ONLY.format(name=name, gap=gap)
    fp32_right, int8_right = fp32_pred == targets, int8_pred == targets
    diff = int8_right.astype(float) - fp32_right
    result = {
        "method": name,
        "photos": len(targets),
        "fp32_accuracy": float(fp32_right.mean()),
        "int8_accuracy": float(int8_right.mean()),
        "int8_minus_fp32": float(diff.mean()),
        "int8_minus_fp32_ci": bootstrap_interval(diff),
        "agreement": float((fp32_pred == int8_pred).mean()),
        **extra,
    }
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / f"cv_int8-{name}.json").write_text(json.dumps(result, indent=1))
    lo, hi = result["int8_minus_fp32_ci"]
    table = (
        f"{how}\n\n"
        "| method | photos | fp32 top-1 (OOF) | int8 top-1 (OOF) | int8 - fp32 (95% CI) "
        "| same answer |\n|---|---|---|---|---|---|\n"
        f"| {name} | {len(targets)} | {result['fp32_accuracy']:.4f} | "
        f"{result['int8_accuracy']:.4f} | "
        f"{result['int8_minus_fp32']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {result['agreement']:.4f} |\n"
    )
    if method.fine_tune:
        table += "\n" + _fold_table(result)
    print(table)
    print(f"published {publish(f'cv-int8-{name}', 'int8 vs fp32, cross-validated', table)}")
    return 0


HEAD_ONLY = (
    "Per fold, `{name}`'s head is trained as the shipped model is: on every row of the "
    "other folds, for the fold's cross-fitted epoch count (no inner holdout), so its fp32 "
    "figure is not the CV table's. It predicts the fold's photos from the fp32 base's "
    "features and from the int8 base's (cut out of the int8 model at the pooled features; "
    "largest feature difference {gap:.3g})."
)
TUNED = (
    "Per fold, the method is trained again as cross-validation trained it (same rows and "
    "seed, stopped at the fold's chosen epoch), converted to ONNX, and quantised to int8 "
    "as `python -m convert --int8` does, calibrated on 200 of the fold's training photos. "
    "Both ONNX models score the fold's held-out photos through the serving preprocessing."
)


def head_only(method, report: dict, args, weights: str | None):
    """(targets, fp32 and int8 predictions): one int8 base, a head trained per fold."""
    import onnxruntime as ort

    from training import data, engine
    from training.methods import FEATURES, predict, train_head

    row = next(r for r in report["methods"] if r["method"] == method.name)
    dataset = data.scan(args.data_dir)
    files = [f for split in dataset.splits for f in dataset[split].files]
    cache = args.cache_dir / f"features_int8-{report['image_size']}-{dataset.fingerprint[:16]}.npy"
    if cache.is_file():
        int8 = np.load(cache)
    else:
        cut = base_model(args.model, SCRATCH / "int8-base.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(cut), options, providers=["CPUExecutionProvider"])
        int8 = features(session, files, report["image_size"])
        np.save(cache, int8)
    by_view, targets = engine.inputs(
        [method], dataset, report["image_size"], weights, args.cache_dir
    )
    fold = np.load(args.cv_dir / "folds.npy")
    fp32_pred = np.empty(len(targets), dtype=int)
    int8_pred = np.empty(len(targets), dtype=int)
    int8_views = {FEATURES: int8}
    for i, train_rows, held_out in fold_indices(fold):
        fixed = replace(method, epochs=row["fold_epochs"][i], inner_holdout=0.0)
        head = train_head(
            fixed, by_view, targets, train_rows, held_out[:0], len(dataset.labels), 1 + i
        ).top
        fp32_pred[held_out] = predict(head, by_view, held_out).argmax(axis=1)
        int8_pred[held_out] = predict(head, int8_views, held_out).argmax(axis=1)
    gap = float(np.abs(int8 - by_view[FEATURES]).max())
    return targets, fp32_pred, int8_pred, gap


def _tuned_checks(got: dict, cv_oof: np.ndarray) -> dict:
    """How closely the retrained folds reproduce the CV report, and ONNX fp32 Keras."""
    keras, fp32 = got["keras"], got["fp32"]
    return {
        "keras_same_answer_as_cv": float((keras.argmax(1) == cv_oof.argmax(1)).mean()),
        "keras_vs_cv_max_abs_logit_diff": float(np.abs(keras - cv_oof).max()),
        "onnx_fp32_vs_keras_max_abs_logit_diff": float(np.abs(fp32 - keras).max()),
        "folds": got["folds"],
    }


def _fold_table(result: dict) -> str:
    lines = [
        "| fold | fine-tuning epochs | fp32 top-1 | int8 top-1 | train s | convert + int8 s |",
        "|---|---|---|---|---|---|",
    ]
    for f in result["folds"]:
        lines.append(
            f"| {f['fold']} | {f['fine_tune_epochs']} | {f['fp32_accuracy']:.4f} | "
            f"{f['int8_accuracy']:.4f} | {f['train_s']:.0f} | {f['convert_s']:.0f} |"
        )
    lines.append(
        f"\nThe retrained folds give the CV report's answer on "
        f"{result['keras_same_answer_as_cv']:.2%} of photos (largest logit difference "
        f"{result['keras_vs_cv_max_abs_logit_diff']:.2g}). Largest logit difference of ONNX "
        "fp32 (from the pixels) against Keras (from the float16-cached activations): "
        f"{result['onnx_fp32_vs_keras_max_abs_logit_diff']:.2g}."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
