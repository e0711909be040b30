"""Which score tells a photo outside the ten categories, measured out of fold.

Two kinds of out-of-catalogue photo, both scored by heads that never saw them:

- **Garments outside the ten** (near): each class in turn is left out of training. For
  every fold, today's recipe trains a 9-class head on the fold's training rows without
  that class; the held-out fold's photos of the left-out class are out of catalogue, the
  held-out photos of the nine others are in catalogue. This stands in for the polo,
  blazer or hoodie that a seller uploads: a garment the model has never been taught.
- **Not clothing** (far): photos that installed packages ship (scikit-image's sample
  data, scikit-learn's and matplotlib's sample images, and crops of them), scored by the
  10-class fold heads.

Scores compared, each from what the served model can compute: the calibrated top
probability (``msp``), the energy (``T * logsumexp(z / T)``), and distances on the pooled
base features to the class means of the training rows: Mahalanobis with a shared,
shrunk covariance (``mahalanobis``) and the same relative to one Gaussian of all rows
(``relative``). A score flags a photo as out of catalogue below the quantile that rejects
``FRR`` of the in-catalogue photos; ``confident`` then also needs the photo not flagged.

    python -m bench.out_of_catalogue            # ~10 min on 2 cores with cached features
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import results
from training.calibration import confidence_threshold

FRRS = (0.02, 0.05, 0.10)
PRECISION = 0.97
SCORES = ("msp", "energy", "mahalanobis", "relative")
SHRINK = 0.1  # covariance + SHRINK * mean variance * I: 2,048 features, ~3,000 photos


def package_images(limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """Photos and pictures shipped by installed packages (none is clothing), as RGB."""
    found: list[tuple[str, Image.Image]] = []
    for source, folder in _image_folders():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif"):
                continue
            try:
                with Image.open(path) as image:
                    rgb = image.convert("RGB")
            except OSError:
                continue
            if min(rgb.size) >= 64:
                found.append((f"{source}/{path.name}", rgb))
    return found[:limit] if limit else found


def with_crops(images: list[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image]]:
    """Each image and, when it is large enough, its four quarter crops (more views of it)."""
    out = []
    for name, image in images:
        out.append((name, image))
        w, h = image.size
        if min(w, h) >= 256:
            for i, (x, y) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
                out.append((f"{name}#crop{i}", image.crop((x, y, x + w // 2, y + h // 2))))
    return out


def _image_folders() -> Iterator[tuple[str, Path]]:
    import importlib.util

    for package, sub in (
        ("skimage", "data"),
        ("sklearn", "datasets/images"),
        ("matplotlib", "mpl-data/sample_data"),
    ):
        spec = importlib.util.find_spec(package)
        if spec and spec.origin:
            folder = Path(spec.origin).parent / sub
            if folder.is_dir():
                yield package, folder


def image_pixels(images: list[tuple[str, Image.Image]], image_size: int) -> np.ndarray:
    """The images through the serving preprocessing, as JPEG uploads would arrive."""
    from lambda_function import preprocessing

    pixels = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, (_, image) in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        pixels[i] = preprocessing.load_pixels(buffer.getvalue(), image_size)
    return pixels


@dataclass
class Gaussians:
    """Class means and a shared precision matrix on the pooled features (+ a global one)."""

    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)
    mean: np.ndarray  # (d,)
    global_precision: np.ndarray  # (d, d)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> Gaussians:
        x = x.astype(np.float64)
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        centred = x - means[np.searchsorted(classes, y)]
        mean = x.mean(axis=0)
        return cls(means, _shrunk_precision(centred), mean, _shrunk_precision(x - mean))

    def distances(self, x: np.ndarray) -> np.ndarray:
        """(N, classes) squared Mahalanobis distances to the class means."""
        x = x.astype(np.float64)
        return np.stack([_mahalanobis(x - m, self.precision) for m in self.means], axis=1)

    def background(self, x: np.ndarray) -> np.ndarray:
        return _mahalanobis(x.astype(np.float64) - self.mean, self.global_precision)


def _shrunk_precision(centred: np.ndarray) -> np.ndarray:
    cov = centred.T @ centred / len(centred)
    cov += SHRINK * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.inv(cov)


def _mahalanobis(delta: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return ((delta @ precision) * delta).sum(axis=1)


def logit_scores(logits: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """The calibrated top probability and the energy; higher means more in catalogue."""
    from training.calibration import softmax

    z = logits / temperature
    top = z.max(axis=1)
    return {
        "msp": softmax(logits, temperature).max(axis=1),
        "energy": temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1))),
    }


def distance_scores(g: Gaussians, x: np.ndarray) -> dict[str, np.ndarray]:
    """Minus the nearest class's Mahalanobis distance, plain and relative to the background."""
    d = g.distances(x)
    return {"mahalanobis": -d.min(axis=1), "relative": -(d - g.background(x)[:, None]).min(axis=1)}


@dataclass
class FoldScores:
    """What the heads and Gaussians that never saw them say of the photos and the extras."""

    mapped: np.ndarray  # (N,) each photo's class among those trained on; -1: left out
    oof_logits: np.ndarray  # (N, classes trained on)
    oof_distances: dict[str, np.ndarray]  # score -> (N,)
    extra_logits: np.ndarray  # (folds * extras, classes): each extra once per fold head
    extra_distances: dict[str, np.ndarray]  # score -> (folds * extras,)


def fold_scores(
    features: np.ndarray,
    targets: np.ndarray,
    fold: np.ndarray,
    extra: np.ndarray,
    left_out: int | None,
    seed: int,
) -> FoldScores:
    """Out-of-fold logits and distances of every photo (and of ``extra`` per fold) from
    heads and Gaussians fitted without class ``left_out``."""
    from training.folds import fold_indices
    from training.methods import FEATURES, TODAY, train_head

    classes = np.arange(targets.max() + 1)
    keep = classes if left_out is None else np.delete(classes, left_out)
    remap = np.full(len(classes), -1)
    remap[keep] = np.arange(len(keep))
    mapped = remap[targets]
    everything = np.concatenate([features, extra])
    n = len(targets)
    extra_rows = np.arange(n, n + len(extra))
    oof = np.zeros((n, len(keep)))
    oof_distances = {name: np.zeros(n) for name in ("mahalanobis", "relative")}
    extra_logits, extra_distances = [], []
    for i, train_rows, held_out in fold_indices(fold):
        rows = train_rows[mapped[train_rows] >= 0]
        run = train_head(
            TODAY,
            {FEATURES: everything},
            np.concatenate([mapped.clip(min=0), np.zeros(len(extra), dtype=int)]),
            rows,
            np.concatenate([held_out, extra_rows]),
            len(keep),
            seed + i,
        )
        assert run.inner_accuracy is not None
        best = run.logits[int(np.argmax(run.inner_accuracy))]
        g = Gaussians.fit(features[rows], mapped[rows])
        oof[held_out] = best[: len(held_out)]
        for name, value in distance_scores(g, features[held_out]).items():
            oof_distances[name][held_out] = value
        extra_logits.append(best[len(held_out) :])
        extra_distances.append(distance_scores(g, extra))
    return FoldScores(
        mapped,
        oof,
        oof_distances,
        np.concatenate(extra_logits),
        {k: np.concatenate([d[k] for d in extra_distances]) for k in oof_distances},
    )


def evaluate(
    s_in: dict, targets_in: np.ndarray, probs_in: np.ndarray, s_out: dict, frr: float
) -> dict[str, dict[str, float]]:
    """Per score: the flag's cut-off at ``frr`` of the in-catalogue photos; the ``confident``
    threshold refitted for 97% precision on the photos not flagged; then the coverage and
    precision of ``confident`` in catalogue and its rate out of catalogue."""
    correct_in = probs_in.argmax(axis=1) == targets_in
    table = {}
    for name in SCORES:
        cut = float(np.quantile(s_in[name], frr))
        flagged_in = s_in[name] < cut
        msp_cut = confidence_threshold(
            probs_in[~flagged_in], targets_in[~flagged_in], PRECISION
        ).threshold
        confident_in = (s_in["msp"] >= msp_cut) & ~flagged_in
        confident_out = (s_out["msp"] >= msp_cut) & ~(s_out[name] < cut)
        table[name] = {
            "cut": cut,
            "msp_cut": msp_cut,
            "coverage": float(confident_in.mean()),
            "precision": float(correct_in[confident_in].mean()) if confident_in.any() else 1.0,
            "flagged_out": float((s_out[name] < cut).mean()),
            "confident_out": float(confident_out.mean()),
        }
    return table


def run(options: argparse.Namespace) -> dict:
    from lambda_function.preprocessing import scale
    from training.calibration import fit_temperature, softmax
    from training.data import scan
    from training.features import labelled_features
    from training.folds import stratified_folds
    from training.model import make_base

    dataset = scan(options.data_dir)
    features, targets = labelled_features(
        dataset, options.image_size, options.weights, options.cache_dir
    )
    features = features.astype(np.float32)
    fold = stratified_folds(targets, options.k, options.seed)
    images = with_crops(package_images(options.limit))
    base = make_base(options.image_size, options.weights)
    pixels = scale(image_pixels(images, options.image_size))
    extra = np.asarray(base.predict(pixels, batch_size=32, verbose=0), dtype=np.float32)
    print(f"{len(targets)} labelled photos, {len(images)} non-clothing images")

    report: dict = {"photos": len(targets), "non_clothing": len(images), "near": {}, "far": {}}
    near_in: dict = {name: [] for name in SCORES}
    near_out: dict = {name: [] for name in SCORES}
    near_probs: list = []
    near_targets: list = []
    for left_out in [None, *range(len(dataset.labels))] if not options.quick else [None, 0]:
        scored = fold_scores(features, targets, fold, extra, left_out, options.seed)
        mapped, inside = scored.mapped, scored.mapped >= 0
        temperature = fit_temperature(scored.oof_logits[inside], mapped[inside])
        s = logit_scores(scored.oof_logits, temperature) | scored.oof_distances
        probs = softmax(scored.oof_logits[inside], temperature)
        cut = confidence_threshold(probs, mapped[inside], PRECISION).threshold
        if left_out is None:
            far = logit_scores(scored.extra_logits, temperature) | scored.extra_distances
            s_in = {k: v[inside] for k, v in s.items()}
            report["temperature"] = temperature
            report["msp_cut"] = cut
            report["far"] = {
                f"{frr:.2f}": evaluate(s_in, mapped[inside], probs, far, frr) for frr in FRRS
            }
            report["far_by_source"] = _by_source(images, far, cut)
            print(json.dumps(report["far"]["0.05"], indent=1))
            continue
        name = dataset.labels[left_out]
        for k in SCORES:
            near_in[k].append(s[k][inside])
            near_out[k].append(s[k][~inside])
        near_probs.append(probs)
        near_targets.append(mapped[inside])
        rates = evaluate(
            {k: v[inside] for k, v in s.items()},
            mapped[inside],
            probs,
            {k: v[~inside] for k, v in s.items()},
            0.05,
        )
        report["near"][name] = {k: v["confident_out"] for k, v in rates.items()}
        print(f"  left out {name}: confident on it {report['near'][name]}")
    report["near_pooled"] = _pooled(near_in, near_out, near_probs, near_targets)
    return report


def _by_source(images: list, far: dict, cut: float) -> dict[str, float]:
    sources = np.array([name.split("/")[0] for name, _ in images])
    folds = len(far["msp"]) // len(images)
    sources = np.tile(sources, folds)
    return {
        str(src): float((far["msp"][sources == src] >= cut).mean()) for src in np.unique(sources)
    }


def _pooled(near_in: dict, near_out: dict, probs: list, targets: list) -> dict:
    """The left-out classes together: each 9-class run's own cut-offs, rates pooled."""
    table = {}
    for frr in FRRS:
        row = {}
        for name in SCORES:
            conf_in, right_in, conf_out, flag_out = [], [], [], []
            for i, (p, t) in enumerate(zip(probs, targets, strict=True)):
                s_in, s_out = near_in[name][i], near_out[name][i]
                cut = np.quantile(s_in, frr)
                kept = s_in >= cut
                msp_cut = confidence_threshold(p[kept], t[kept], PRECISION).threshold
                conf_in.append((near_in["msp"][i] >= msp_cut) & kept)
                right_in.append(p.argmax(axis=1) == t)
                flag_out.append(s_out < cut)
                conf_out.append((near_out["msp"][i] >= msp_cut) & (s_out >= cut))
            c_in, r_in = np.concatenate(conf_in), np.concatenate(right_in)
            row[name] = {
                "coverage": float(c_in.mean()),
                "precision": float(r_in[c_in].mean()) if c_in.any() else 1.0,
                "flagged_out": float(np.concatenate(flag_out).mean()),
                "confident_out": float(np.concatenate(conf_out).mean()),
            }
        table[f"{frr:.2f}"] = row
    return table


def _table(rows: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One row per false-reject rate and score."""
    lines = [
        "| FRR | score | in-catalogue coverage | precision | flagged out | confident out |",
        "|---|---|---|---|---|---|",
    ]
    for frr, row in rows.items():
        for name, r in row.items():
            lines.append(
                f"| {frr} | {name} | {r['coverage']:.3f} | {r['precision']:.3f} | "
                f"{r['flagged_out']:.3f} | {r['confident_out']:.3f} |"
            )
    return lines


def markdown(report: dict) -> str:
    lines = [
        f"{report['photos']:,} labelled photos (5 folds, today's recipe), "
        f"{report['non_clothing']} non-clothing images from installed packages. "
        f"`confident`: calibrated top probability >= {report['msp_cut']:.3f} "
        f"({PRECISION:.0%} precision out of fold), and not flagged.",
        "",
        "## Garments outside the ten (each class left out in turn)",
        "",
        *_table(report["near_pooled"]),
        "",
        "Confident on the left-out class at FRR 0.05, by class:",
        "",
        "| class | " + " | ".join(SCORES) + " |",
        "|---" * (len(SCORES) + 1) + "|",
    ]
    for name, r in report["near"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in SCORES) + " |")
    lines += ["", "## Not clothing", "", *_table(report["far"])]
    lines += ["", "Confident (no flag) by source: " + json.dumps(report["far_by_source"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.out_of_catalogue", description=__doc__)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small")),
    )
    p.add_argument("--weights", default=os.environ.get("XCEPTION_WEIGHTS", "imagenet"))
    p.add_argument("--cache-dir", type=Path, default=Path("artifacts/cache"))
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="at most this many package images")
    p.add_argument("--quick", action="store_true", help="leave out one class only (smoke test)")
    p.add_argument("--results", type=Path, default=results.RESULTS)
    options = p.parse_args(argv)
    report = run(options)
    results.SCRATCH.mkdir(parents=True, exist_ok=True)
    (results.SCRATCH / "out-of-catalogue.json").write_text(json.dumps(report, indent=1))
    path = results.publish(
        "out-of-catalogue",
        "Out-of-catalogue scores, out of fold",
        markdown(report),
        options.results,
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
