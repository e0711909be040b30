"""`python -m training train` on the shared tiny pipeline's photos: manifest, best epoch, .h5.

The train run reuses the pipeline's cached base features and activations (the real
ImageNet base at 71 px), so only the head (and the fine-tuned blocks) train here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline_fixture import LABELS, SIZE, Pipeline

pytestmark = [
    pytest.mark.slow,
    # Keras 3.15 with numpy 2.4, on every predict: not ours to fix, and it drowns the report.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy"),
]


def load_checkpoint(path: Path):
    """A saved ``.h5`` full model, uncompiled (for prediction), as convert loads it."""
    import keras

    return keras.models.load_model(path, compile=False)


def train(pipeline: Pipeline, out: Path, *extra: str) -> dict:
    """`python -m training train` as a user runs it; the manifest's one run."""
    from training.cli import main

    argv = ["train", *pipeline.common(), "--output-dir", str(out), *extra]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (run,) = manifest["runs"]
    assert manifest["best_run"] == run["name"]
    return run


@pytest.fixture(scope="module")
def trained(tiny_pipeline: Pipeline, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train") / "training"
    head = ("--epochs", "6", "--learning-rate", "0.01", "--size-inner", "16")
    return out, train(tiny_pipeline, out, *head)


def test_train_writes_manifest_with_the_shared_conventions(trained, tiny_pipeline) -> None:
    out, run = trained
    assert run["name"] == f"today_s{SIZE}"
    assert run["labels"] == list(LABELS)
    assert run["config"]["image_size"] == SIZE
    assert run["config"]["epochs"] == 6 and run["config"]["size_inner"] == 16
    assert run["config"]["path"] == "fast (cached features)"
    assert len(run["history"]["val_accuracy"]) == 6
    assert re.fullmatch(r"[0-9a-f]{64}", run["fingerprint"]["weights"])
    assert re.fullmatch(r"[0-9a-f]{64}", run["fingerprint"]["data"])
    assert (out / run["best_checkpoint"]).is_file()
    assert not Path(run["best_checkpoint"]).is_absolute()


def test_the_checkpoint_is_the_first_best_epoch_by_validation_accuracy(trained) -> None:
    _, run = trained
    val = run["history"]["val_accuracy"]
    best_epoch = int(np.argmax(val)) + 1  # first of equals
    assert run["best_epoch"] == best_epoch
    assert run["best_val_accuracy"] == max(val)
    assert Path(run["best_checkpoint"]).name == f"xception_v1_{best_epoch:02d}_{max(val):.3f}.h5"


def test_the_saved_model_scores_validation_as_its_best_epoch(trained, tiny_pipeline) -> None:
    from training import data, features

    out, run = trained
    model = load_checkpoint(out / run["best_checkpoint"])
    validation = data.scan(tiny_pipeline.data)["validation"]
    logits = features.stream(model, validation.files, SIZE)
    assert np.ptp(logits) > 1.0  # real logits, not a constant
    assert (logits.argmax(1) == validation.targets).mean() == pytest.approx(
        run["best_val_accuracy"]
    )


def test_train_evaluates_the_saved_checkpoint_on_test(trained) -> None:
    out, run = trained
    test = run["test"]
    assert test["n_images"] == 4 * len(LABELS)
    assert np.array(test["confusion_matrix"]).sum() == test["n_images"]
    assert set(test["per_class"]) == set(LABELS)
    assert test["fast_path_agreement"]["same_prediction"] == 1.0
    assert test["fast_path_agreement"]["max_abs_logit_diff"] < 1e-4
    plot = (out / run["best_checkpoint"]).parent / "confusion_test.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_scores_the_best_run_again_with_the_same_result(trained, tiny_pipeline) -> None:
    from training.cli import main

    out, run = trained
    argv = ["evaluate", *tiny_pipeline.common(), "--output-dir", str(out)]
    assert main(argv) == 0
    after = json.loads((out / "manifest.json").read_text())["runs"][0]["test"]
    assert after["accuracy"] == run["test"]["accuracy"]
    assert after["confusion_matrix"] == run["test"]["confusion_matrix"]


def test_features_are_cached_per_split_size_weights_and_data(tiny_pipeline) -> None:
    cached = sorted(p.name for p in tiny_pipeline.cache.glob("features-*.npy"))
    assert [name.split("-")[:2] for name in cached] == [["features", str(SIZE)]] * 3
    assert sorted(name.rsplit("-", 1)[1] for name in cached) == [
        "test.npy",
        "train.npy",
        "validation.npy",
    ]


def test_fine_tuning_trains_the_top_blocks_only_and_the_h5_predicts_what_it_measured(
    tiny_pipeline: Pipeline, tmp_path: Path
) -> None:
    from training.model import make_base

    run = train(
        tiny_pipeline,
        tmp_path,
        "--method",
        "ft-block13",
        "--fine-tune-epochs",
        "2",
        "--epochs",
        "4",
    )
    assert run["name"] == f"ft-block13_s{SIZE}" and len(run["history"]["val_accuracy"]) == 2
    assert run["config"]["path"] == "fine-tune from block13 (cached activations)"
    agreement = run["test"]["fast_path_agreement"]
    assert agreement["same_prediction"] == 1.0
    assert agreement["max_abs_logit_diff"] < 0.01  # the cached activations are float16
    base = load_checkpoint(tmp_path / run["best_checkpoint"]).get_layer("xception")
    original = make_base(SIZE, tiny_pipeline.weights)
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


def test_the_network_is_a_frozen_functional_xception_pooled_by_keras_with_logits() -> None:
    import keras

    from training.model import make_network

    network = make_network(SIZE, 8, 0.2, weights=None, n_classes=4)
    model = network.model
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    assert [layer.name for layer in model.layers] == [
        "input",
        "xception",
        "inner",
        "dropout",
        "logits",
    ]
    assert network.base.trainable is False and network.base.output_shape == (None, 2048)
    assert isinstance(network.base.layers[-1], keras.layers.GlobalAveragePooling2D)
    assert model.output_shape == (None, 4)
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert [w.name for w in network.top.trainable_weights] == ["kernel", "bias", "kernel", "bias"]


def test_keras_pooling_is_the_mean_over_the_last_feature_map(tiny_pipeline: Pipeline) -> None:
    """``Xception(pooling="avg")`` gives what pooling by hand gave (and the cache holds)."""
    import keras

    from training import data, features
    from training.model import make_base

    base = make_base(SIZE, tiny_pipeline.weights)
    unpooled = keras.Model(base.input, base.layers[-2].output)
    train = data.scan(tiny_pipeline.data)["train"]
    by_hand = keras.layers.GlobalAveragePooling2D()(features.stream(unpooled, train.files, SIZE))
    pooled = features.stream(base, train.files, SIZE)
    np.testing.assert_allclose(pooled, np.asarray(by_hand), rtol=1e-6, atol=1e-6)
    (cached,) = tiny_pipeline.cache.glob(f"features-{SIZE}-*-train.npy")
    np.testing.assert_array_equal(np.load(cached), pooled)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 32}, "Received: image_size=32"),
        ({"droprate": 1.0}, "Expected 0 <= droprate < 1"),
        ({"weights": "/nowhere.h5"}, "'/nowhere.h5', which does not exist"),
    ],
)
def test_the_network_refuses_bad_arguments(kwargs, message) -> None:
    from training.model import make_network

    with pytest.raises(ValueError, match=re.escape(message)):
        settings = {"image_size": SIZE, "size_inner": 8, "droprate": 0.2, "weights": None}
        make_network(**{**settings, **kwargs})


def test_help_explains_every_command_without_loading_tensorflow() -> None:
    for command in ([], ["train"], ["cv"], ["evaluate"]):
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


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--epochs", "0"], "Expected --epochs >= 1. Received: 0"),
        (["--learning-rate", "0"], "Expected --learning-rate > 0. Received: 0.0"),
        (["--droprate", "1"], "Expected 0 <= droprate < 1"),
    ],
)
def test_train_refuses_a_bad_override_before_reading_photos(
    tmp_path: Path, capsys, option: list[str], message: str
) -> None:
    from training.cli import main

    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), *option]) == 2
    assert message in capsys.readouterr().err
