"""The pre-traffic hook, through its handler: known photos through the new version, over
real HTTP (Lambda Invoke and CodeDeploy on loopback, tests/deploy_local.py), with the real
predict handler answering; and the known-answer set ``python -m convert`` writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convert.errors import ConvertError
from convert.images import labelled_split
from convert.known import main as known_main
from convert.known import select, write_known_set
from lambda_function import deploy_check, handler
from lambda_function.files import sha256_file
from lambda_function.model import Classifier
from lambda_function.preprocessing import prepare
from tests.deploy_local import deploy_endpoint, labelled_folder
from tests.lambda_testing import LABELS, FakeContext, build_model

TARGET = "arn:aws:lambda:us-east-1:123456789012:function:shop-PredictFunction-AbC:7"
EVENT = {"DeploymentId": "d-EXAMPLE1", "LifecycleEventHookExecutionId": "hook-exec-1"}
PHOTOS = {
    "dress": [(230, 20, 20), (200, 50, 50), (150, 90, 90), (128, 128, 128)],  # the last: unsure
    "hat": [(20, 230, 20), (50, 200, 50)],
    "longsleeve": [(20, 20, 230), (40, 40, 210)],
}


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "good.onnx")


@pytest.fixture
def known(tmp_path: Path, good_model: Path) -> Path:
    """The good model's known-answer set, written as ``python -m convert`` writes it."""
    root = labelled_folder(tmp_path / "data", "validation", PHOTOS)
    write_known_set(good_model, labelled_split(root, "validation", LABELS), tmp_path / "known")
    return tmp_path / "known"


@pytest.fixture
def hook(
    known: Path, function_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Path], tuple[dict[str, Any], Any]]:
    """Run the hook against a new version that serves ``model``; returns its result and
    the calls the loopback endpoint received."""
    monkeypatch.setenv(deploy_check.TARGET, TARGET)
    monkeypatch.setenv("KNOWN_SET_DIR", str(known))

    def run(model: Path, functions: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
        function_env(MODEL_PATH=model, MODEL_S3_URI=None)
        predict = {TARGET: lambda event: handler.lambda_handler(event, FakeContext())}
        with deploy_endpoint(predict if functions is None else functions) as server:
            result = deploy_check.lambda_handler(dict(EVENT), FakeContext())
        return result, server.calls

    return run


def reported(calls: Any, status: str) -> None:
    assert calls.statuses == [
        {
            "deploymentId": EVENT["DeploymentId"],
            "lifecycleEventHookExecutionId": EVENT["LifecycleEventHookExecutionId"],
            "status": status,
        }
    ]


# -- the hook ---------------------------------------------------------------------------


def test_the_model_passes_its_own_known_set_and_the_hook_reports_succeeded(
    hook, good_model, known
) -> None:
    result, calls = hook(good_model)
    reported(calls, "Succeeded")
    manifest = json.loads((known / "known.json").read_text())
    assert result == {"status": "Succeeded", "checked": 6, "failed": [], "reason": ""}
    assert [name for name, _ in calls.invocations] == [TARGET] * len(manifest["photos"])
    assert all(set(event) == {"image"} for _, event in calls.invocations)


def test_a_model_that_answers_wrong_fails_the_deployment(hook, tmp_path) -> None:
    weights = np.zeros((3, len(LABELS)), dtype=np.float32)
    weights[0, 1] = weights[1, 0] = weights[2, 2] = 8.0  # red and green swapped
    wrong = build_model(tmp_path / "wrong.onnx", weights=weights)
    result, calls = hook(wrong)
    reported(calls, "Failed")
    assert result["checked"] == 6
    assert {(f["expected"], f["answered"]) for f in result["failed"]} == {
        ("dress", "hat"),
        ("hat", "dress"),
    }
    assert len(result["failed"]) == 4


def test_a_model_that_cannot_load_fails_the_deployment(hook, tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    result, calls = hook(broken)
    reported(calls, "Failed")
    assert len(result["failed"]) == result["checked"] == 6
    assert all("model_unavailable" in f["error"] for f in result["failed"])


def test_a_function_error_fails_the_deployment(hook, good_model) -> None:
    def crash(event: Any) -> Any:
        raise MemoryError("Runtime exited with error: signal: killed")

    result, calls = hook(good_model, {TARGET: crash})
    reported(calls, "Failed")
    assert all(f["error"].startswith("function error: Runtime exited") for f in result["failed"])


def test_a_version_that_cannot_be_invoked_fails_the_deployment(hook, good_model) -> None:
    result, calls = hook(good_model, {TARGET.replace(":7", ":6"): lambda event: {}})
    reported(calls, "Failed")
    assert all("ResourceNotFoundException" in f["error"] for f in result["failed"])


def test_without_a_known_set_the_deployment_fails_without_invoking(hook, good_model, known) -> None:
    (known / "known.json").unlink()
    result, calls = hook(good_model)
    reported(calls, "Failed")
    assert calls.invocations == []
    assert result["reason"].startswith("KnownSetError: Expected a known-answer manifest")


def test_without_the_target_version_the_deployment_fails(hook, good_model, monkeypatch) -> None:
    monkeypatch.delenv(deploy_check.TARGET)
    result, calls = hook(good_model)
    reported(calls, "Failed")
    assert "Expected TARGET_VERSION_ARN" in result["reason"]


def test_an_event_without_the_hook_ids_is_refused_with_what_it_held() -> None:
    with pytest.raises(ValueError, match=r"Expected a CodeDeploy lifecycle event .*\['foo'\]"):
        deploy_check.lambda_handler({"foo": 1}, FakeContext())


# -- the known-answer set ------------------------------------------------------------------


def test_the_set_keeps_per_class_the_most_confident_right_answers(
    tmp_path, good_model, known
) -> None:
    manifest = json.loads((known / "known.json").read_text())
    assert manifest["model"] == {"sha256": sha256_file(good_model)}
    photos = manifest["photos"]
    assert [p["category"] for p in photos] == ["dress"] * 2 + ["hat"] * 2 + ["longsleeve"] * 2
    classifier = Classifier.load(good_model)
    candidates = sorted((tmp_path / "data" / "validation" / "dress").iterdir())
    every = [classifier.predict(prepare(p.read_bytes(), 32)[0])[0][0] for p in candidates]
    kept = sorted(every, reverse=True)[:2]  # not the paler red, nor the grey
    assert [p["probability"] for p in photos[:2]] == [round(float(x), 6) for x in kept]
    assert sorted(p.name for p in known.iterdir()) == sorted(
        ["known.json", *(p["file"] for p in photos)]
    )
    assert deploy_check.load_known(known) == [
        deploy_check.KnownPhoto(p["file"], p["category"]) for p in photos
    ]


def test_a_new_set_replaces_the_older_one_whole(tmp_path, good_model, known) -> None:
    (known / "stale.png").write_bytes(b"from an older model")
    root = labelled_folder(
        tmp_path / "other", "validation", {"dress": [(230, 20, 20)]} | {"hat": [(20, 230, 20)]}
    )
    write_known_set(good_model, labelled_split(root, "validation", LABELS), known)
    assert sorted(p.name for p in known.iterdir()) == ["00-dress.png", "01-hat.png", "known.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".known")]


def test_a_model_with_no_confident_right_answer_gets_no_set(tmp_path, known) -> None:
    unsure = build_model(tmp_path / "unsure.onnx", weights=np.zeros((3, len(LABELS))))
    photos = labelled_split(tmp_path / "data", "validation", LABELS)
    assert select(unsure, photos) == []
    with pytest.raises(ConvertError, match="expected at least one of 8 labelled photos"):
        write_known_set(unsure, photos, known)
    assert not known.exists()  # never the older model's set beside this one


def test_the_command_writes_the_set_beside_an_already_converted_model(tmp_path, capsys) -> None:
    served = build_model(tmp_path / "model" / "serve.onnx")
    labelled_folder(tmp_path / "data", "validation", PHOTOS)
    split = tmp_path / "data" / "validation"
    assert known_main(["--model", str(served), str(split)]) == 0
    assert "known: 6 photos" in capsys.readouterr().out
    assert len(deploy_check.load_known(tmp_path / "model" / "known")) == 6
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    assert known_main(["--model", str(tmp_path / "broken.onnx"), str(split)]) == 2
    assert "is not a loadable ONNX model" in capsys.readouterr().err


def test_the_check_runs_locally_on_a_model_file_before_any_deploy(
    tmp_path, good_model, known, function_env, capsys
) -> None:
    function_env(MODEL_PATH=good_model, MODEL_S3_URI=None)  # main sets them; undone after
    assert deploy_check.main(["--model", str(good_model), "--known", str(known)]) == 0
    assert "Succeeded: 6/6 known photos answered right" in capsys.readouterr().out
    weights = np.zeros((3, len(LABELS)), dtype=np.float32)
    weights[0, 2] = weights[1, 1] = weights[2, 0] = 8.0  # red and blue swapped
    wrong = build_model(tmp_path / "wrong.onnx", weights=weights)
    handler.get_service.cache_clear()
    assert deploy_check.main(["--model", str(wrong), "--known", str(known)]) == 1
    out = capsys.readouterr().out
    assert "FAILED 00-dress.png: expected dress, got longsleeve" in out
    assert "Failed: 2/6" in out
    assert deploy_check.main(["--model", str(wrong), "--known", str(tmp_path)]) == 2
