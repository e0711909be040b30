"""Training end to end on a few real images: checkpoints, manifest, plots, fast path = .h5."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lambda_function import preprocessing
from tests.datasets import copy_subset
from training import data

pytestmark = [
    pytest.mark.slow,
    # Keras 3.15 with numpy 2.4, on every predict: not ours to fix, and it drowns the report.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy"),
]

CLASSES = ("dress", "hat", "pants", "shoes")
SIZE = 71  # Xception's smallest input


def load_checkpoint(path: Path):
    """A saved ``.h5`` full model, uncompiled (for prediction), as convert loads it."""
    import keras

    return keras.models.load_model(path, compile=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, data_dir: Path) -> Path:
    """Four classes, four real images per class and split, from DATA_DIR."""
    return copy_subset(data_dir, tmp_path_factory.mktemp("tiny") / "ds", CLASSES, per_class=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset: Path) -> Path:
    """`python -m training train` with random base weights, as a user would run it."""
    out = tmp_path_factory.mktemp("train")
    argv = ["train", "--data-dir", str(dataset), "--weights", "none", "--image-size", str(SIZE)]
    argv += ["--epochs", "3", "--output-dir", str(out / "training")]
    argv += ["--cache-dir", str(out / "cache"), "--verbose", "0", "--seed", "3"]
    from training.cli import main

    assert main(argv) == 0
    return out / "training"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, dataset: Path, xception_weights: Path):
    """A fast-path run with the real ImageNet base at 71 px (logits worth comparing)."""
    from training.config import RunConfig
    from training.train import train_run
    from training.workspace import Workspace

    out = tmp_path_factory.mktemp("real")
    ws = Workspace(data.scan(dataset), xception_weights, out, out / "cache", verbose=0)
    cfg = RunConfig(image_size=SIZE, learning_rate=0.01, size_inner=16, epochs=6, seed=5)
    return ws, train_run(ws, cfg)


def test_train_writes_manifest_with_the_shared_conventions(trained: Path) -> None:
    manifest = json.loads((trained / "manifest.json").read_text())
    (run,) = manifest["runs"]
    assert manifest["best_run"] == run["name"]
    assert run["labels"] == list(CLASSES)
    assert run["config"]["image_size"] == SIZE
    assert set(run["history"]) == {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert len(run["history"]["val_accuracy"]) == 3
    assert run["fingerprint"]["weights"] == "random"
    assert re.fullmatch(r"[0-9a-f]{64}", run["fingerprint"]["data"])
    assert (trained / run["best_checkpoint"]).is_file()
    assert not Path(run["best_checkpoint"]).is_absolute()


def test_the_checkpoint_is_the_best_epoch_by_validation_accuracy(trained: Path) -> None:
    run = json.loads((trained / "manifest.json").read_text())["runs"][0]
    val = run["history"]["val_accuracy"]
    best_epoch = int(np.argmax(val)) + 1  # first of equals, as ModelCheckpoint keeps
    assert run["best_epoch"] == best_epoch
    assert run["best_val_accuracy"] == max(val)
    assert Path(run["best_checkpoint"]).name == f"xception_v1_{best_epoch:02d}_{max(val):.3f}.h5"


def test_train_evaluates_the_saved_checkpoint_on_test(trained: Path) -> None:
    run = json.loads((trained / "manifest.json").read_text())["runs"][0]
    test = run["test"]
    assert test["n_images"] == 4 * len(CLASSES)
    assert np.array(test["confusion_matrix"]).sum() == test["n_images"]
    assert set(test["per_class"]) == set(CLASSES)
    assert test["fast_path_agreement"]["same_prediction"] == 1.0
    assert test["fast_path_agreement"]["max_abs_logit_diff"] < 1e-4


def test_evaluate_scores_the_best_run_again_with_the_same_result(
    trained: Path, dataset: Path
) -> None:
    from training.cli import main

    before = json.loads((trained / "manifest.json").read_text())["runs"][0]["test"]
    argv = ["evaluate", "--data-dir", str(dataset)]
    argv += ["--weights", "none", "--output-dir", str(trained), "--no-cache", "--verbose", "0"]
    assert main(argv) == 0
    after = json.loads((trained / "manifest.json").read_text())["runs"][0]["test"]
    assert after["accuracy"] == before["accuracy"]
    assert after["confusion_matrix"] == before["confusion_matrix"]


def test_train_writes_plots(trained: Path) -> None:
    run_dir = next((trained / "runs").iterdir())
    for name in ("learning_curve.png", "confusion_test.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_predicts_what_the_fast_path_measured(real_run) -> None:
    ws, result = real_run
    model = load_checkpoint(result.checkpoint)
    pixels = ws.pixels("validation", SIZE)
    full = model.predict(preprocessing.scale(pixels), verbose=0)
    fast = result.top.predict(ws.features("validation", SIZE), verbose=0)
    np.testing.assert_allclose(full, fast, atol=1e-4, rtol=1e-4)
    assert (full.argmax(1) == fast.argmax(1)).all()
    accuracy = (full.argmax(1) == ws.targets("validation")).mean()
    assert accuracy == pytest.approx(result.best_val_accuracy)
    assert np.ptp(fast) > 1.0  # real logits, not a constant


def test_after_fit_the_best_epoch_not_the_last_is_kept(real_run) -> None:
    _, result = real_run
    val = result.history["val_accuracy"]
    assert result.best_epoch == int(np.argmax(val)) + 1
    assert result.checkpoint.name == f"xception_v1_{result.best_epoch:02d}_{max(val):.3f}.h5"


def test_features_are_cached_per_size_weights_and_data(real_run) -> None:
    ws, _ = real_run
    cached = sorted(p.name for p in ws.cache_dir.glob("features-*.npy"))
    fp = ws.weights_fingerprint[:16]
    assert cached == [
        f"features-{SIZE}-{fp}-{ws.dataset.fingerprint[:16]}-{split}.npy"
        for split in ("train", "validation")
    ]


def test_augmented_run_uses_model_checkpoint_and_keeps_augmentation_out_of_the_model(
    dataset: Path, tmp_path: Path
) -> None:
    from training.augment import ALL
    from training.config import RunConfig
    from training.train import train_run
    from training.workspace import Workspace

    ws = Workspace(data.scan(dataset), None, tmp_path, None, verbose=0)
    result = train_run(ws, RunConfig(image_size=SIZE, epochs=2, augmentation=ALL))
    assert result.name.endswith("_aug") and not result.config.fast
    saved = sorted(p.name for p in result.checkpoint.parent.glob("*.h5"))
    assert result.checkpoint.name in saved
    model = load_checkpoint(result.checkpoint)
    names = [layer.name for layer in model.layers]
    assert names == ["input", "xception", "pooling", "inner", "dropout", "logits"]


def test_tune_writes_table_curves_and_picks_by_the_rule(dataset: Path, tmp_path: Path) -> None:
    from training.cli import main

    out = tmp_path / "tuning"
    argv = ["tune", "--data-dir", str(dataset), "--weights", "none", "--image-size", str(SIZE)]
    argv += ["--epochs", "2", "--output-dir", str(out), "--no-cache", "--verbose", "0"]
    argv += ["--stages", "lr,inner", "--learning-rates", "0.001,0.1", "--inner-sizes", "0,8"]
    assert main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    assert [row["setting"] for row in summary["rows"]] == [
        "lr=0.001",
        "lr=0.1",
        "inner=0",
        "inner=8",
    ]
    rows = summary["rows"]
    scores = [(-r["best_val_accuracy"], r["trainable_params"], r["best_epoch"]) for r in rows]
    assert summary["best"] == summary["rows"][scores.index(min(scores))]["run"]
    assert "(best)" in (out / "results.md").read_text()
    assert (out / "results.csv").read_text().startswith("stage,setting,run,best_val_accuracy")
    for stage in ("lr", "inner"):
        assert (out / f"curves_{stage}.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["best_run"] == summary["best"]


def test_tf_scale_is_bit_identical_to_the_serving_scale() -> None:
    from training.pipeline import tf_scale

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(tf_scale(pixels).numpy(), preprocessing.scale(pixels))


def test_validation_batches_are_scaled_pixels_unaugmented(dataset: Path) -> None:
    from training.pipeline import make_dataset

    ds = data.scan(dataset)
    pixels = data.load_pixels(ds, "validation", SIZE)
    batches = list(make_dataset(pixels, ds["validation"].targets, len(CLASSES), batch_size=5))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(x, preprocessing.scale(pixels))
    assert y.argmax(1).tolist() == ds["validation"].targets.tolist()


def test_augmenter_changes_train_pixels_within_range() -> None:
    from training.augment import ALL, Augmentation, make_augmenter

    assert make_augmenter(Augmentation()) is None
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, SIZE, SIZE, 3)).astype("float32")
    out = np.asarray(make_augmenter(ALL, seed=1)(x, training=True))
    assert out.shape == x.shape and not np.array_equal(out, x)
    assert out.min() >= 0 and out.max() <= 255


def test_make_model_is_a_frozen_functional_xception_with_logits() -> None:
    import keras

    from training.model import make_model

    model = make_model(image_size=SIZE, weights=None, n_classes=4, size_inner=8)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    base = model.get_layer("xception")
    assert base.trainable is False
    assert model.output_shape == (None, 4)
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.loss.get_config()["from_logits"] is True
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias", "kernel", "bias"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 32}, "Received: image_size=32"),
        ({"droprate": 1.0}, "Expected 0 <= droprate < 1"),
        ({"weights": "/nowhere.h5"}, "'/nowhere.h5', which does not exist"),
        ({"learning_rate": 0}, "Expected a learning rate > 0"),
    ],
)
def test_make_model_rejects_bad_arguments(kwargs, message) -> None:
    from training.model import make_model

    with pytest.raises(ValueError, match=re.escape(message)):
        make_model(**{"weights": None, **kwargs})


def test_help_explains_every_command_without_loading_tensorflow() -> None:
    for command in ([], ["train"], ["tune"], ["evaluate"]):
        done = subprocess.run(
            [sys.executable, "-m", "training", *command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "usage: python -m training" in done.stdout
    code = "import sys, training.cli; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == (
        "False\n"
    )


def test_cli_reports_a_bad_dataset_without_a_traceback(tmp_path: Path, capsys) -> None:
    from training.cli import main

    (tmp_path / "train").mkdir()
    assert main(["train", "--data-dir", str(tmp_path), "--weights", "none"]) == 2
    assert "error: Expected at least two class folders in" in capsys.readouterr().err


def test_fine_tuning_trains_the_top_blocks_only_and_the_h5_predicts_what_it_measured(
    real_run,
) -> None:
    from training.finetune import fine_tune_run
    from training.model import make_base

    ws, head = real_run
    cfg = replace(head.config, fine_tune_from="block13", fine_tune_epochs=2, fine_tune_flip=True)
    tuned = fine_tune_run(ws, cfg, head)
    assert tuned.name.endswith("_ft13_flip")
    assert len(list(ws.cache_dir.glob("block13flip-*-train.npy"))) == 1
    model = load_checkpoint(tuned.checkpoint)
    full = model.predict(preprocessing.scale(ws.pixels("validation", SIZE)), verbose=0)
    measured = tuned.fast_predict("validation")
    np.testing.assert_allclose(full, measured, atol=0.01)  # the cache is float16
    assert (full.argmax(1) == measured.argmax(1)).all()
    original = make_base(SIZE, ws.weights)
    base = model.get_layer("xception")
    for name, changed in [
        ("block12_sepconv3", False),  # below the cut: frozen
        ("block13_sepconv1_bn", False),  # BatchNorm: statistics and scale stay frozen
        ("block13_sepconv1", True),
        ("block14_sepconv2", True),
    ]:
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                base.get_layer(name).get_weights(),
                original.get_layer(name).get_weights(),
                strict=True,
            )
        )
        assert same is not changed, name
