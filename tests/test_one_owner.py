"""Each cross-stage rule has one owner, and the stages that use it cannot drift apart.

Two kinds of checks: behaviour (both sides of a rule give the same answer on the same
input) and ownership (the tell-tale code of a rule appears in its owner's module only).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from convert import metadata as convert_metadata
from convert import runtime
from convert.checkpoint import find_checkpoint
from convert.errors import VerificationError
from convert.images import labelled_split
from convert.to_onnx import rename_output
from convert.verify import verify_model
from lambda_function import files, model, preprocessing
from lambda_function.config import default_threads
from lambda_function.errors import ModelUnavailableError
from lambda_function.model_metadata import OUTPUT
from tests import images
from tests.lambda_testing import LABELS, build_model
from tests.onnx_files import metadata_props
from training import data, features

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("training", "convert", "lambda_function", "torch_training")


def production_files() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_text()
        for package in PRODUCTION
        for path in sorted((ROOT / package).rglob("*.py"))
    }


# --- ownership: the rule's code lives in one module --------------------------------------

OWNERS = {
    "EXIF orientation read": (r"getexif\(", "lambda_function/preprocessing.py"),
    "ONNX metadata writer": (r"set_model_props|metadata_props\.add\(", "convert/metadata.py"),
    "output name": (r"[\"']logits[\"']", "lambda_function/model_metadata.py"),
    "session options": (r"SessionOptions\(", "lambda_function/model.py"),
    "graph signature check": (r"get_outputs\(\)", "lambda_function/model.py"),
    "sha256 of a file": (r"file_digest\(|sha256\(\w+\.read_bytes", "lambda_function/files.py"),
    "temp then rename": (r"mkstemp\(|with_suffix\(\"\.tmp|\.part\"", "lambda_function/files.py"),
    "dataset folder listing": (r"\.iterdir\(\)", "training/data.py"),
}


@pytest.mark.parametrize("rule", OWNERS)
def test_each_rule_is_written_in_its_owner_module_only(rule: str) -> None:
    pattern, owner = OWNERS[rule]
    found = sorted(name for name, text in production_files().items() if re.search(pattern, text))
    assert found == [owner], f"{rule}: {pattern!r} found in {found}"


# --- preprocessing corrections -----------------------------------------------------------


def plain_pixels(data: bytes, size: int) -> np.ndarray:
    """What ``load_img`` gives: the stored pixels converted to RGB, NEAREST resize."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(rgb, dtype=np.uint8)


def tagged(orientation: int) -> bytes:
    """A photo stored as is, tagged with any EXIF orientation (0 and 9 are not valid ones)."""
    exif = Image.Exif()
    exif[preprocessing.EXIF_ORIENTATION] = orientation
    return images.encode(images.noise("RGB", seed=3), "PNG", exif=exif.tobytes())


CASES = {case.name: case.data for case in images.cases()}
CASES |= {f"EXIF orientation {k} (not a transposition)": tagged(k) for k in (0, 1, 9, 12)}


@pytest.mark.parametrize("name", CASES)
def test_corrections_name_a_correction_exactly_when_serving_changes_the_pixels(name: str) -> None:
    data = CASES[name]
    changed = not np.array_equal(preprocessing.load_pixels(data, 64), plain_pixels(data, 64))
    with Image.open(io.BytesIO(data)) as image:
        named = preprocessing.corrections(image)
    assert bool(named) == changed, (name, named)


def test_corrections_say_which_correction() -> None:
    def named(data: bytes) -> set[str]:
        with Image.open(io.BytesIO(data)) as image:
            return preprocessing.corrections(image)

    assert named(images.with_orientation(images.noise("RGB"), 6)) == {"orientation"}
    assert named(images.encode(images.noise("RGBA"), "PNG")) == {"transparency"}
    assert named(images.encode(images.noise("I;16"), "PNG")) == {"sixteen_bit"}
    assert named(images.encode(images.noise("RGB"), "PNG")) == set()


# --- ONNX metadata, output name and signature --------------------------------------------


def test_the_writer_keeps_other_keys_and_replaces_the_contracts(tmp_path: Path) -> None:
    path = build_model(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    convert_metadata.set_props(proto, {"labels": '["a", "b"]', "extra": "kept?"})
    convert_metadata.set_props(proto, {"extra": "yes"})
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["labels"] == '["a", "b"]' and props["extra"] == "yes"
    assert len(proto.metadata_props) == len(props)  # no key twice


def test_a_variant_gets_exactly_the_metadata_of_its_source(tmp_path: Path) -> None:
    source = build_model(tmp_path / "source.onnx", labels=("x", "y", "z"))
    target = build_model(tmp_path / "target.onnx", metadata={"stale": "1", "labels": "[]"})
    convert_metadata.copy_metadata(source, target)
    assert metadata_props(target) == metadata_props(source)


def renamed_output(tmp_path: Path, name: str) -> Path:
    proto = onnx.load(str(build_model(tmp_path / "tiny.onnx", image_size=32)))
    rename_output(proto, name)
    onnx.save(proto, str(tmp_path / "renamed.onnx"))
    return tmp_path / "renamed.onnx"


def test_conversion_writes_the_output_name_serving_reads(tmp_path: Path) -> None:
    path = renamed_output(tmp_path, OUTPUT)
    assert model.Classifier.load(path).predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (
        1,
        len(LABELS),
    )


def test_verification_and_serving_refuse_the_same_signature_with_the_same_words(
    tmp_path: Path,
) -> None:
    path = renamed_output(tmp_path, "probabilities")
    with pytest.raises(ModelUnavailableError) as served:
        model.Classifier.load(path)
    with pytest.raises(VerificationError) as verified:
        verify_model(path, None, [])  # type: ignore[arg-type]  # refused before Keras runs
    assert "expected an output 'logits' of 10 logits" in str(served.value)
    assert str(served.value) == str(verified.value)


# --- onnxruntime session -----------------------------------------------------------------


def test_verification_opens_the_session_serving_opens(tmp_path: Path) -> None:
    path = build_model(tmp_path / "m.onnx")
    threads = default_threads(os.environ)
    served = model.open_session(path, intra_op_threads=threads).get_session_options()
    verified = runtime.open_session(path).get_session_options()
    for setting in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode"):
        assert getattr(verified, setting) == getattr(served, setting), setting
    spinning = "session.intra_op.allow_spinning"
    assert verified.get_session_config_entry(spinning) == "0"
    assert served.get_session_config_entry(spinning) == "0"


# --- dataset listing ---------------------------------------------------------------------


def test_convert_lists_a_split_exactly_as_training_does(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "ds"
    for split in ("validation",):
        for label in ("hat", "shoes"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for photo in sorted((data_dir / split / label).iterdir())[:2]:
                (folder / photo.name).write_bytes(photo.read_bytes())
            # Names a suffix list would miss or take, which training's listing decides.
            (folder / "UPPER.JPG").write_bytes(photo.read_bytes())
            (folder / "no_suffix").write_bytes(photo.read_bytes())
            (folder / ".DS_Store").write_bytes(b"not data")
    split = data.scan(root, splits=("validation",))["validation"]
    photos = labelled_split(root, "validation", ["dress", "hat", "shoes"])
    assert [p.path for p in photos] == list(split.files)
    assert [p.label for p in photos] == [
        ("hat", "shoes").index(n) + 1 for n in [f.parent.name for f in split.files]
    ]


# --- sha256 and atomic writes ------------------------------------------------------------


def test_training_and_conversion_fingerprint_a_file_alike(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.h5"
    checkpoint.write_bytes(os.urandom(100_000))
    expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert files.sha256_file(checkpoint) == expected
    assert features.weights_fingerprint(checkpoint) == expected
    assert find_checkpoint(checkpoint, labels=["a", "b"]).sha256 == expected


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    files.write_text_atomic(target, "old")

    def fail(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_arrays_are_saved_atomically_and_load_back(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    data.save_array(tmp_path / "features.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "features.npy"), array)
    assert [p.name for p in tmp_path.iterdir()] == ["features.npy"]
