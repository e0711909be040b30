"""`python -m convert` on a small functional model built here: parity, metadata, the
verified-or-nothing guarantee, variants and the error cases."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from convert.cli import main
from convert.errors import VerificationError
from convert.images import labelled_split, spread_sample
from convert.quantize import int8_accepted, quantize_int8
from convert.verify import verify_model
from lambda_function import preprocessing
from lambda_function.model_metadata import ModelMetadata
from tests.onnx_files import read_metadata

pytestmark = pytest.mark.slow

SIZE = 71
VAL_ACCURACY = 0.42
LIMIT = 24  # verification photos per conversion: every class, a few seconds


def small_model(size: int = SIZE, n_classes: int = 10, seed: int = 0, *, channels: int = 3):
    """Conv, BatchNorm, a separable conv with a residual, pooling, logits: Xception's ops."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, channels), name="input")
    x = layers.Conv2D(16, 3, strides=2, use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    y = layers.BatchNormalization()(layers.SeparableConv2D(16, 3, padding="same")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(n_classes, name="logits")(x))


def save_training_folder(root: Path, model, labels, size: int = SIZE) -> Path:
    """A training output folder as `python -m training` leaves it: checkpoint + manifest."""
    (root / "checkpoints").mkdir(parents=True)
    model.save(root / "checkpoints" / "small.h5")
    run = {
        "name": "small",
        "config": {"image_size": size},
        "labels": list(labels),
        "best_checkpoint": "checkpoints/small.h5",
        "best_val_accuracy": VAL_ACCURACY,
        "history": {},
        "fingerprint": {},
    }
    (root / "manifest.json").write_text(json.dumps({"runs": [run], "best_run": "small"}))
    return root


@pytest.fixture(scope="module")
def labels(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def training_folder(tmp_path_factory, labels) -> Path:
    return save_training_folder(tmp_path_factory.mktemp("training"), small_model(), labels)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, training_folder: Path, data_dir: Path) -> Path:
    """The model converted once by the CLI, as `make run` does; returns the .onnx path."""
    output = tmp_path_factory.mktemp("model") / "model.onnx"
    argv = [str(training_folder), "-o", str(output), "--data-dir", str(data_dir)]
    assert main([*argv, "--limit", str(LIMIT)]) == 0
    return output


def report_of(model: Path) -> dict:
    return json.loads((model.parent / "report.json").read_text())


def served_folder(folder: Path) -> list[str]:
    """The files a conversion left in ``folder``, less the known-answer set (a tiny test
    model may answer no photo confidently), which, when there, belongs to serve.onnx."""
    names = sorted(p.name for p in folder.iterdir())
    if "known" in names:
        manifest = json.loads((folder / "known" / "known.json").read_text())
        assert (
            manifest["model"]["sha256"]
            == hashlib.sha256((folder / "serve.onnx").read_bytes()).hexdigest()
        )
        names.remove("known")
    return names


def test_conversion_passes_both_checks_on_real_photos(converted: Path) -> None:
    report = report_of(converted)
    assert report["passed"] is True
    for check in ("parity", "user_path"):
        figures = report["verification"][check]
        assert figures["n_images"] == LIMIT
        assert figures["max_abs_diff"] <= 1e-4
        assert figures["top1_agreement"] == 1.0
    assert report["verification"]["user_path"]["preprocessing_mismatch"] == []
    assert report["sizes_bytes"]["onnx"] == converted.stat().st_size


def test_the_model_has_a_named_input_logits_output_and_a_dynamic_batch(converted: Path) -> None:
    import onnx

    graph = onnx.load(str(converted)).graph
    (inp,), (out,) = graph.input, graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("input", ["batch", SIZE, SIZE, 3])
    assert (out.name, dims(out)) == ("logits", ["batch", 10])
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_onnxruntime_matches_keras_at_any_batch_size(converted, training_folder, data_dir) -> None:
    import keras
    import onnxruntime as ort

    model = keras.models.load_model(training_folder / "checkpoints" / "small.h5", compile=False)
    session = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    photos = sorted((data_dir / "test" / "shoes").iterdir())[:5]
    x = preprocessing.preprocess_batch([p.read_bytes() for p in photos], SIZE)
    for batch in (x[:1], x):
        (logits,) = session.run(["logits"], {"input": batch})
        expected = model.predict(batch, verbose=0)
        assert np.abs(logits - expected).max() <= 1e-4
        assert (logits.argmax(1) == expected.argmax(1)).all()


def test_tf2onnx_frees_its_graph_copies_and_converts_the_same(monkeypatch) -> None:
    """Collecting tf2onnx's discarded graph copies (5 GB on Xception) changes no logit."""
    import copy
    import gc

    import onnxruntime as ort
    from tf2onnx.graph import Graph

    import convert.to_onnx
    from convert.to_onnx import keras_to_onnx

    model = small_model()
    x = np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    deepcopy, graphs = copy.deepcopy, []

    def counting(value, memo=None):
        if isinstance(value, Graph):
            graphs.append(sum(isinstance(o, Graph) for o in gc.get_objects()))
        return deepcopy(value, memo)

    def logits(proto) -> np.ndarray:
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(["logits"], {"input": x})[0]

    monkeypatch.setattr(copy, "deepcopy", counting)
    collected = keras_to_onnx(model, SIZE)
    most_alive = max(graphs)
    graphs.clear()
    monkeypatch.setattr(convert.to_onnx, "_collected_graph_copies", contextlib.nullcontext)
    plain = keras_to_onnx(model, SIZE)
    assert most_alive <= 3 < max(graphs), "without collecting, copies pile up"
    assert [n.op_type for n in collected.graph.node] == [n.op_type for n in plain.graph.node]
    np.testing.assert_array_equal(logits(collected), logits(plain))


def test_metadata_round_trips_through_the_model(converted, training_folder, labels) -> None:
    metadata = read_metadata(converted)
    h5 = (training_folder / "checkpoints" / "small.h5").read_bytes()
    assert metadata.labels == tuple(labels)
    assert metadata.image_size == SIZE
    assert metadata.checkpoint_sha256 == hashlib.sha256(h5).hexdigest()
    assert metadata.val_accuracy == VAL_ACCURACY
    assert (metadata.layout, metadata.preprocessing, metadata.resize, metadata.output) == (
        "NHWC",
        "xception",
        "nearest",
        "logits",
    )
    assert datetime.fromisoformat(metadata.created_at).tzinfo is not None
    assert set(metadata.versions) == {
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "opset",
    }
    assert metadata.versions["opset"] == "17"
    assert ModelMetadata.from_props(metadata.to_props()) == metadata


def tamper(proto, factor: float = 1.05) -> None:
    """Scale the largest weight tensor of ``proto`` in place."""
    from onnx import numpy_helper

    largest = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(largest) * np.float32(factor)
    largest.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), largest.name))


def tamper_every_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``convert``'s pipeline tamper with each graph it converts."""
    import convert.pipeline
    from convert.to_onnx import keras_to_onnx

    def tampered_conversion(*args, **kwargs):
        proto = keras_to_onnx(*args, **kwargs)
        tamper(proto)
        return proto

    monkeypatch.setattr(convert.pipeline, "keras_to_onnx", tampered_conversion)


def test_tampered_weights_fail_verification_and_leave_no_model(
    tmp_path, training_folder, data_dir, monkeypatch, capsys
) -> None:
    tamper_every_conversion(monkeypatch)
    output = tmp_path / "model.onnx"
    argv = [str(training_folder), "-o", str(output), "--data-dir", str(data_dir), "--limit", "10"]
    assert main(argv) == 1
    assert "verification failed" in capsys.readouterr().err
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False
    assert report["verification"]["parity"]["max_abs_diff"] > 1e-4
    assert len(report["verification"]["parity"]["over_tolerance"]) == 10


def test_verify_model_names_the_photos_a_tampered_file_gets_wrong(
    tmp_path, converted, training_folder, data_dir, labels
) -> None:
    import keras
    import onnx

    proto = onnx.load(str(converted))
    tamper(proto, factor=1.5)
    onnx.save(proto, str(tmp_path / "tampered.onnx"))
    model = keras.models.load_model(training_folder / "checkpoints" / "small.h5", compile=False)
    photos = spread_sample(labelled_split(data_dir, "validation", labels), 5)
    result = verify_model(tmp_path / "tampered.onnx", model, photos)
    assert not result.passed
    assert not result.parity.passed and not result.user_path.passed
    assert set(result.parity.over_tolerance) == {str(p.path) for p in photos}


def test_a_model_without_its_metadata_fails_verification(
    tmp_path, converted, training_folder, data_dir, labels
) -> None:
    import keras
    import onnx

    proto = onnx.load(str(converted))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    model = keras.models.load_model(training_folder / "checkpoints" / "small.h5", compile=False)
    photos = spread_sample(labelled_split(data_dir, "validation", labels), 2)
    with pytest.raises(VerificationError, match="Missing: schema, labels, image_size"):
        verify_model(tmp_path / "bare.onnx", model, photos)


def test_a_bare_sequential_h5_converts_with_labels_and_user_photos(tmp_path, data_dir) -> None:
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((48, 48, 3)),
            layers.Conv2D(8, 3),
            layers.GlobalAveragePooling2D(),
            layers.Dense(3),
        ]
    )
    model.save(tmp_path / "seq.h5")
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((data_dir / "test" / "hat").iterdir())[:4]:
        (photos / image.name).write_bytes(image.read_bytes())
    output = tmp_path / "out" / "model.onnx"
    argv = [
        str(tmp_path / "seq.h5"),
        "-o",
        str(output),
        "--labels",
        "a,b,c",
        "--images",
        str(photos),
    ]
    assert main(argv) == 0
    metadata = read_metadata(output)
    assert (metadata.labels, metadata.image_size, metadata.val_accuracy) == (
        ("a", "b", "c"),
        48,
        None,
    )
    assert report_of(output)["verification"]["parity"]["n_images"] == 4


def error_case(tmp_path: Path, case: str, labels: list[str]) -> tuple[list[str], str]:
    """Build the input of one error case; returns the CLI arguments and the expected message."""
    h5 = tmp_path / "model.h5"
    out = ["-o", str(tmp_path / "out" / "model.onnx"), "--labels", ",".join(labels)]
    if case == "missing file":
        return [str(tmp_path / "gone.h5"), *out], r"gone\.h5: no such file"
    if case == "not a keras model":
        h5.write_text("these are not the weights you are looking for")
        return [str(h5), *out], r"model\.h5: not a Keras model"
    if case == "weights only":
        small_model().save_weights(tmp_path / "w.weights.h5")
        return [str(tmp_path / "w.weights.h5"), *out], r"w\.weights\.h5: not a Keras model"
    if case == "non-square input":
        import keras

        inputs = keras.Input((64, 48, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        keras.Model(inputs, keras.layers.Dense(10)(pooled)).save(h5)
        return [str(h5), *out], r"expected an input of shape \(None, S, S, 3\).*\(None, 64, 48, 3\)"
    if case == "greyscale input":
        small_model(channels=1).save(h5)
        return [str(h5), *out], r"\(None, 71, 71, 1\)"
    if case == "wrong number of outputs":
        small_model(n_classes=5).save(h5)
        return [str(h5), *out], r"expected one output of shape \(None, 10\).*\(None, 5\)"
    if case == "softmax output":
        import keras

        base = small_model()
        keras.Model(base.input, keras.layers.Softmax()(base.output)).save(h5)
        return [str(h5), *out], "expected logits, but the last layer"
    if case == "size differs from manifest":
        save_training_folder(tmp_path / "t", small_model(size=75), labels, size=71)
        return [str(tmp_path / "t"), "-o", str(tmp_path / "m.onnx")], "image_size=71, but"
    if case == "unwritable output":
        small_model().save(h5)
        (tmp_path / "file").write_text("a file, not a folder")
        argv = [str(h5), "-o", str(tmp_path / "file" / "model.onnx"), "--labels", ",".join(labels)]
        return argv, r"file/model\.onnx: cannot write there"
    if case == "unreadable photo":
        small_model().save(h5)
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        return [str(h5), *out, "--images", str(tmp_path / "photos")], r"broken\.jpg: not a readable"
    if case == "output is a folder":
        small_model().save(h5)
        return [str(h5), "-o", str(tmp_path), "--labels", ",".join(labels)], "is a folder"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "not a keras model",
        "weights only",
        "non-square input",
        "greyscale input",
        "wrong number of outputs",
        "softmax output",
        "size differs from manifest",
        "unwritable output",
        "output is a folder",
        "unreadable photo",
    ],
)
def test_bad_input_exits_2_with_a_message_naming_it(tmp_path, labels, capsys, case) -> None:
    argv, message = error_case(tmp_path, case, labels)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "convert: error: " in err
    assert re.search(message, err), err
    assert not list(tmp_path.rglob("*.onnx"))


def test_bad_options_are_refused_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--limit", "0"])
    assert info.value.code == 2
    assert "--limit must be >= 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def with_variants(tmp_path_factory, training_folder, data_dir) -> tuple[int, Path]:
    output = tmp_path_factory.mktemp("variants") / "model.onnx"
    argv = [str(training_folder), "-o", str(output), "--data-dir", str(data_dir)]
    argv += ["--limit", "12", "--optimize", "--int8", "--calibration-images", "20"]
    return main([*argv, "--eval-limit", "30"]), output


def test_the_optimised_graph_matches_keras_and_carries_the_metadata(with_variants) -> None:
    _, output = with_variants
    optimized = report_of(output)["variants"]["optimized"]
    assert optimized["accepted"] is True
    assert optimized["parity_with_keras"]["max_abs_diff"] <= 1e-4
    assert optimized["top1_agreement_with_fp32"]["validation+test"] == 1.0
    assert read_metadata(Path(optimized["path"])) == read_metadata(output)


def test_int8_is_kept_exactly_when_it_is_within_one_point(with_variants) -> None:
    code, output = with_variants
    report = report_of(output)
    int8 = report["variants"]["int8"]
    drops = {s: int8["accuracy_fp32"][s] - int8["accuracy"][s] for s in ("test", "validation+test")}
    assert int8["accepted"] == all(d <= 0.01 + 1e-12 for d in drops.values())
    assert output.with_name("model.int8.onnx").exists() == int8["accepted"]
    assert code == (0 if int8["accepted"] else 1)
    assert 0 <= int8["top1_agreement_with_fp32"]["test"] <= 1
    assert output.exists() and report["verification"]["passed"]  # fp32 is in place regardless


def test_int8_acceptance_rule_is_one_accuracy_point() -> None:
    assert int8_accepted(0.90, 0.89)
    assert int8_accepted(0.90, 0.95)
    assert not int8_accepted(0.90, 0.8899)


def test_int8_model_is_qdq_with_the_same_metadata(tmp_path, converted, data_dir, labels) -> None:
    import onnx

    calibration = spread_sample(labelled_split(data_dir, "train", labels), 10)
    quantize_int8(converted, tmp_path / "int8.onnx", calibration, SIZE)
    proto = onnx.load(str(tmp_path / "int8.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights
    assert read_metadata(tmp_path / "int8.onnx") == read_metadata(converted)
    assert [o.name for o in proto.graph.output] == ["logits"]


def test_a_rejected_int8_model_is_not_written_but_fp32_is(
    tmp_path, training_folder, data_dir, monkeypatch, capsys
) -> None:
    import convert.pipeline

    monkeypatch.setattr(convert.pipeline, "int8_accepted", lambda fp32, int8: False)
    output = tmp_path / "model.onnx"
    argv = [str(training_folder), "-o", str(output), "--data-dir", str(data_dir), "--int8"]
    code = main([*argv, "--limit", "10", "--calibration-images", "8", "--eval-limit", "10"])
    assert code == 1
    assert "variant(s) int8 rejected" in capsys.readouterr().err
    assert served_folder(tmp_path) == ["model.onnx", "report.json", "serve.onnx"]
    report = report_of(output)
    assert report["variants"]["int8"]["accepted"] is False
    assert report["variants"]["int8"]["path"] is None
    assert report["passed"] is False and report["verification"]["passed"] is True
    assert report["served"]["variant"] == "fp32"
    assert (tmp_path / "serve.onnx").read_bytes() == output.read_bytes()


def test_every_conversion_serves_fp32_by_default_as_serve_onnx(converted: Path) -> None:
    served = converted.with_name("serve.onnx")
    report = report_of(converted)
    assert served.read_bytes() == converted.read_bytes()
    assert report["served"] == {
        "variant": "fp32",
        "path": str(served),
        "source": str(converted),
        "sha256": hashlib.sha256(served.read_bytes()).hexdigest(),
    }
    assert read_metadata(served) == read_metadata(converted)


def test_an_accepted_int8_is_the_served_model(with_variants) -> None:
    _, output = with_variants
    report = report_of(output)
    served = output.with_name("serve.onnx").read_bytes()
    if report["variants"]["int8"]["accepted"]:
        assert report["served"]["variant"] == "int8"
        assert served == output.with_name("model.int8.onnx").read_bytes()
    else:
        assert report["served"]["variant"] == "fp32"
        assert served == output.read_bytes()


def test_a_new_conversion_removes_the_variants_of_an_older_one(
    tmp_path, training_folder, data_dir
) -> None:
    output = tmp_path / "model.onnx"
    for name in ("model.int8.onnx", "model.optimized.onnx", "serve.onnx"):
        (tmp_path / name).write_bytes(b"from an older checkpoint")
    (tmp_path / "known").mkdir()
    (tmp_path / "known" / "known.json").write_text('{"model": {"sha256": "older"}}')
    argv = [str(training_folder), "-o", str(output), "--data-dir", str(data_dir)]
    assert main([*argv, "--limit", "10"]) == 0
    assert served_folder(tmp_path) == ["model.onnx", "report.json", "serve.onnx"]
    assert (tmp_path / "serve.onnx").read_bytes() == output.read_bytes()
    assert report_of(output)["served"]["variant"] == "fp32"


def test_a_failed_conversion_leaves_the_served_model_alone(
    tmp_path, training_folder, data_dir, monkeypatch
) -> None:
    tamper_every_conversion(monkeypatch)
    (tmp_path / "serve.onnx").write_bytes(b"the model served until now")
    (tmp_path / "model.int8.onnx").write_bytes(b"its int8")
    argv = [str(training_folder), "-o", str(tmp_path / "model.onnx"), "--data-dir", str(data_dir)]
    assert main([*argv, "--limit", "10"]) == 1
    assert (tmp_path / "serve.onnx").read_bytes() == b"the model served until now"
    assert (tmp_path / "model.int8.onnx").read_bytes() == b"its int8"


def test_the_output_may_not_be_the_served_copy(tmp_path, training_folder, capsys) -> None:
    assert main([str(training_folder), "-o", str(tmp_path / "serve.onnx")]) == 2
    assert "expected an output named other than serve.onnx" in capsys.readouterr().err
