"""The feedback loop end to end against moto in server mode: an answer's suggestion, the
seller's decision through POST /feedback, its metrics line, the field report, the export,
and training's data scan reading the export (docs/feedback.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from lambda_function import feedback, handler, results, uploads
from lambda_function.model_metadata import ModelMetadata
from tests.aws_local import (
    clear_clients,
    create_results_table,
    dynamodb_throttling,
    faulty_proxy,
    moto_endpoint,
    resource,
    s3_put_event,
)
from tests.lambda_testing import (
    BLUE,
    GREEN,
    LABELS,
    RED,
    FakeContext,
    b64,
    build_model,
    image_bytes,
    load_event,
)
from training import data, field, field_data
from training.folds import stratified_folds

FEEDBACK, RESULTS, BUCKET = "feedback", "results", "shop-uploads"


@pytest.fixture(scope="module")
def confident_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, with a confidence threshold of 0.5 (a pure colour is confident)."""
    props = ModelMetadata(
        labels=LABELS, image_size=32, checkpoint_sha256="ab" * 32, confidence_threshold=0.5
    ).to_props()
    return build_model(tmp_path_factory.mktemp("m") / "model.onnx", metadata=props)


def create_feedback_table(name: str) -> None:
    """The feedback table with the key schema ``template.yaml`` gives it."""
    properties = resource("FeedbackTable")["Properties"]
    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode=properties["BillingMode"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, confident_model: Path) -> Iterator[str]:
    with moto_endpoint() as endpoint:
        create_feedback_table(FEEDBACK)
        create_results_table(RESULTS)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        for name, value in {
            "MODEL_PATH": confident_model,
            "FEEDBACK_TABLE": FEEDBACK,
            "RESULTS_TABLE": RESULTS,
            "ALLOW_LOOPBACK_FOR_TESTS": 1,
        }.items():
            monkeypatch.setenv(name, str(value))
        handler.get_service.cache_clear()
        yield endpoint
        handler.get_service.cache_clear()


def predict(image: bytes, request_id: str = "req-1") -> dict[str, Any]:
    event = load_event("http-api-url.json")
    event["body"], event["isBase64Encoded"] = json.dumps({"image": b64(image)}), False
    return json.loads(handler.lambda_handler(event, FakeContext(aws_request_id=request_id))["body"])


def send_feedback(body: Any) -> tuple[int, dict[str, Any]]:
    event = load_event("http-api-feedback.json")
    event["body"] = json.dumps(body)
    response = feedback.lambda_handler(event, FakeContext(aws_request_id="fb-1"))
    return response["statusCode"], json.loads(response["body"])


def metric_lines(text: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event and "_aws" in line]


def upload(key: str, image: bytes) -> str:
    """Put a photo in the uploads bucket and run the upload function on its event."""
    etag = boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=image)["ETag"].strip('"')
    uploads.lambda_handler(s3_put_event(BUCKET, key, etag, len(image)), FakeContext())
    return etag


def test_an_api_answer_carries_a_suggestion_id_that_feedback_accepts(aws, capsys) -> None:
    answer = predict(image_bytes(RED), "req-red")
    assert answer["suggestion_id"] == "req-red" and answer["category"] == LABELS[0]
    assert answer["confident"] is True
    drift = metric_lines(capsys.readouterr().out, "answers")
    assert [(d["Category"], d["Answers"], d["ConfidentAnswers"]) for d in drift] == [
        (LABELS[0], 1, 1)
    ]
    status, body = send_feedback({"suggestion_id": "req-red", "category": "pants"})
    assert (status, body["outcome"], body["accepted"]) == (200, "recorded", False)
    (line,) = metric_lines(capsys.readouterr().out, "feedback")
    assert (line["Overridden"], line["Accepted"], line["Confident"]) == (1, 0, "true")
    assert (
        line["SuggestedCategory"] == LABELS[0]
        and line["ModelVersion"] == answer["model"]["version"]
    )
    names = {m["Name"] for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"Accepted", "Overridden"} <= names
    stored = results.from_item(
        boto3.client("dynamodb").get_item(
            TableName=FEEDBACK, Key={"suggestion_id": {"S": "req-red"}}
        )["Item"]
    )
    assert stored["final_category"] == "pants" and stored["accepted"] is False
    assert "expires_at" not in stored  # judged suggestions are kept


def test_the_same_feedback_twice_is_stored_once_and_counted_once(aws, capsys) -> None:
    predict(image_bytes(GREEN), "req-g")
    capsys.readouterr()
    first = send_feedback({"suggestion_id": "req-g", "category": LABELS[1]})
    again = send_feedback({"suggestion_id": "req-g", "category": LABELS[1]})
    assert (first[1]["outcome"], again[1]["outcome"]) == ("recorded", "unchanged")
    assert len(metric_lines(capsys.readouterr().out, "feedback")) == 1
    status, revised = send_feedback({"suggestion_id": "req-g", "category": "shirt"})
    assert (status, revised["outcome"], revised["accepted"]) == (200, "revised", False)
    (line,) = metric_lines(capsys.readouterr().out, "feedback")
    assert line["Revisions"] == 1


def test_an_unknown_suggestion_is_a_404_and_an_unknown_category_a_422(aws) -> None:
    status, body = send_feedback({"suggestion_id": "never-answered", "category": "pants"})
    assert (status, body["error"]["code"]) == (404, "unknown_suggestion")
    predict(image_bytes(BLUE), "req-b")
    status, body = send_feedback({"suggestion_id": "req-b", "category": "sandals"})
    assert (status, body["error"]["code"]) == (422, "unknown_category")
    assert (
        "Received: 'sandals'" in body["error"]["message"] and "t-shirt" in body["error"]["message"]
    )


@pytest.mark.parametrize(
    "body",
    [
        "pants",
        {"category": "pants"},
        {"suggestion_id": "x", "photo": "s3://b/k", "etag": "e", "category": "pants"},
        {"suggestion_id": 3, "category": "pants"},
        {"photo": "https://shop/p.jpg", "etag": "e", "category": "pants"},
        {"suggestion_id": "x", "category": ""},
    ],
)
def test_a_malformed_feedback_is_a_400_saying_what_was_expected(aws, body) -> None:
    status, answer = send_feedback(body)
    assert (status, answer["error"]["code"]) == (400, "bad_request")
    assert answer["error"]["message"].startswith("Expected")


def test_an_upload_row_takes_feedback_by_photo_and_etag(aws, capsys) -> None:
    etag = upload("uploads/a.jpg", image_bytes(GREEN))
    (row,) = [
        results.from_item(i) for i in boto3.client("dynamodb").scan(TableName=RESULTS)["Items"]
    ]
    assert row["confident"] is True  # the row keeps the flag feedback is judged by
    assert metric_lines(capsys.readouterr().out, "answers")[0]["source"] == "upload"
    photo = f"s3://{BUCKET}/uploads/a.jpg"
    status, body = send_feedback(
        {"photo": photo, "etag": etag, "category": LABELS[1], "product_id": "sku-7"}
    )
    assert (status, body["outcome"], body["accepted"]) == (200, "recorded", True)
    assert body["suggestion_id"] == f"{photo}#{etag}"
    status, body = send_feedback({"photo": photo, "etag": "other", "category": LABELS[1]})
    assert (status, body["error"]["code"]) == (404, "unknown_suggestion")


def test_an_answer_whose_suggestion_cannot_be_stored_carries_no_id(aws, monkeypatch) -> None:
    with faulty_proxy(aws) as proxy:
        proxy.fault = dynamodb_throttling("BatchWriteItem")
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        clear_clients()
        answer = predict(image_bytes(RED), "req-lost")
        assert proxy.faults_sent == 2  # both attempts of the one write
    clear_clients()
    assert "suggestion_id" not in answer and answer["category"] == LABELS[0]


def tiny_dataset(root: Path) -> Path:
    """A dataset folder with the model's ten categories, two photos each per split."""
    for split in data.SPLITS:
        for index, label in enumerate(LABELS):
            folder = root / split / label
            folder.mkdir(parents=True)
            for n in range(2):
                colour = (10 * index, 5 * n + (split == "test"), 100)
                (folder / f"{n}.jpg").write_bytes(image_bytes(colour))
    return root


def test_feedback_becomes_a_field_report_an_export_and_training_data(aws, tmp_path) -> None:
    """Feedback write -> field report -> export -> the data scan reads it, groups kept."""
    red, green = image_bytes(RED), image_bytes(GREEN)
    etag_red = upload("uploads/red-front.jpg", red)
    etag_red_again = upload("uploads/red-copy.jpg", red)  # the same bytes twice
    etag_green = upload("uploads/green.jpg", green)
    for key, etag, category in [
        ("red-front.jpg", etag_red, "pants"),
        ("red-copy.jpg", etag_red_again, "pants"),
        ("green.jpg", etag_green, LABELS[1]),
    ]:
        status, _ = send_feedback(
            {"photo": f"s3://{BUCKET}/uploads/{key}", "etag": etag, "category": category,
             "product_id": "sku-1" if key.startswith("red") else "sku-2"}
        )  # fmt: skip
        assert status == 200
    predict(image_bytes(BLUE), "req-api")
    send_feedback({"suggestion_id": "req-api", "category": LABELS[2]})
    predict(image_bytes(BLUE), "req-unjudged")  # no feedback: not in the report

    rows = field.read_feedback(FEEDBACK)
    report = field.summarise(rows)
    (version,) = [v for v in report if v != "all"]
    figures = report[version]
    assert (figures["judged"], figures["accepted"]) == (4, 2)
    assert figures["confident_precision"] == 0.5 and figures["confident_coverage"] == 1.0
    assert figures["overrides"] == {LABELS[0]: {"pants": 2}}

    out = tmp_path / "field"
    summary = field.export(rows, out)
    assert summary["counts"] == {"duplicates": 1, "exported": 2, "no_photo": 1}
    red_file = f"pants/{hashlib.sha256(red).hexdigest()}.jpg"
    assert (out / red_file).read_bytes() == red
    assert field_data.read_groups(out)[red_file] == "sku-1"

    dataset = data.scan(tiny_dataset(tmp_path / "ds"), extra=out)
    train = dataset["train"]
    assert len(train) == 20 + 2 and out / red_file in train.files
    assert train.targets[train.files.index(out / red_file)] == LABELS.index("pants")
    assert dataset.fingerprint != data.scan(tmp_path / "ds").fingerprint
    groups = field_data.dataset_groups(dataset.splits)
    assert sum(g == "product:sku-1" for g in groups) == 1


def test_the_training_cli_prints_the_field_report(aws, capsys) -> None:
    from training.cli import main

    predict(image_bytes(RED), "req-cli")
    send_feedback({"suggestion_id": "req-cli", "category": LABELS[0]})
    capsys.readouterr()
    assert main(["field-report", "--table", FEEDBACK]) == 0
    out = capsys.readouterr().out
    assert "acceptance 100.0% (1/1)" in out and "confident: precision 100.0%" in out


def test_photos_of_one_product_share_a_fold() -> None:
    targets = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 3)
    groups = np.array([f"p{i // 4}" for i in range(len(targets))])  # four photos a product
    fold = stratified_folds(targets, 3, seed=1, groups=groups)
    for product in set(groups):
        assert len(set(fold[groups == product])) == 1
    singles = np.array([str(i) for i in range(len(targets))])
    assert (stratified_folds(targets, 3, 1, singles) == stratified_folds(targets, 3, 1)).all()


def test_an_api_answer_on_an_s3_photo_is_exported_with_its_photo(aws, monkeypatch, tmp_path):
    from lambda_function.fetch import s3 as fetch_s3

    monkeypatch.setenv("S3_ALLOWED_BUCKETS", BUCKET)
    handler.get_service.cache_clear()
    fetch_s3.s3_client.cache_clear()
    photo = image_bytes(BLUE)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="listing/9.jpg", Body=photo)
    event = load_event("http-api-url.json")
    event["body"] = json.dumps({"urls": [f"s3://{BUCKET}/listing/9.jpg", "s3://elsewhere/x.jpg"]})
    answer = json.loads(handler.lambda_handler(event, FakeContext(aws_request_id="req-s3"))["body"])
    fetch_s3.s3_client.cache_clear()
    first, refused = answer["results"]
    assert first["suggestion_id"] == "req-s3-0" and "suggestion_id" not in refused
    assert send_feedback({"suggestion_id": "req-s3-0", "category": "shoes"})[0] == 200
    summary = field.export(field.read_feedback(FEEDBACK), tmp_path / "field")
    assert summary == {"counts": {"exported": 1}, "classes": {"shoes": 1}}
    assert (tmp_path / "field" / "shoes" / f"{hashlib.sha256(photo).hexdigest()}.jpg").is_file()


def test_extra_data_with_a_category_the_dataset_lacks_is_refused_by_name(tmp_path) -> None:
    (tmp_path / "field" / "sandals").mkdir(parents=True)
    (tmp_path / "field" / "sandals" / "a.jpg").write_bytes(image_bytes(RED))
    with pytest.raises(data.DatasetError, match=r"Received: \['sandals'\]"):
        data.scan(tiny_dataset(tmp_path / "ds"), extra=tmp_path / "field")


def test_cv_takes_extra_data_and_keeps_each_product_in_one_fold(tmp_path) -> None:
    from training.cli import build_parser
    from training.cv_command import _groups

    args = build_parser().parse_args(["cv", "--extra-data", str(tmp_path / "field")])
    assert args.extra_data == tmp_path / "field"
    rows = []
    for n, product in enumerate(["sku-1", "sku-1", "sku-2"]):
        folder = tmp_path / "field" / LABELS[n % 2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n}.jpg").write_bytes(image_bytes((n * 40, 10, 10)))
        rows.append((f"{LABELS[n % 2]}/{n}.jpg", product))
    field_data.write_groups(tmp_path / "field", rows)
    dataset = data.scan(tiny_dataset(tmp_path / "ds"), extra=tmp_path / "field")
    groups = _groups(dataset)
    assert len(groups) == sum(len(s) for s in dataset.splits.values())
    products = sorted(g for g in groups if g.startswith("product:"))
    assert products == ["product:sku-1", "product:sku-1", "product:sku-2"]
    targets = np.concatenate([s.targets for s in dataset.splits.values()])
    fold = stratified_folds(targets, 2, seed=1, groups=groups)
    assert len(set(fold[groups == "product:sku-1"])) == 1


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"body": "{not json", "isBase64Encoded": False}, "invalid_json"),
        ({"body": "[" * 100_000, "isBase64Encoded": False}, "invalid_json"),
        ({"body": "%%%", "isBase64Encoded": True}, "invalid_json"),
        ({"body": "", "isBase64Encoded": False}, "empty_body"),
        ({"body": json.dumps({"suggestion_id": "x" * 5000, "category": "hat"})}, "bad_request"),
    ],
)
def test_a_hostile_feedback_body_is_a_400_never_a_crash(aws, event, code) -> None:
    base = load_event("http-api-feedback.json")
    response = feedback.lambda_handler({**base, **event}, FakeContext())
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]["code"]) == (400, code)
    assert len(body["error"]["message"]) <= 1024


def test_a_direct_invocation_takes_the_body_as_its_payload(aws) -> None:
    answer = feedback.lambda_handler(["not", "an", "object"], FakeContext())
    assert (answer["status"], answer["error"]["code"]) == (400, "bad_request")
    predict(image_bytes(RED), "req-direct")
    answer = feedback.lambda_handler(
        {"suggestion_id": "req-direct", "category": LABELS[0]}, FakeContext()
    )
    assert (answer["outcome"], answer["accepted"]) == ("recorded", True)


def test_group_folds_say_what_they_counted_when_impossible() -> None:
    targets = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="Expected one group per sample"):
        stratified_folds(targets, 2, 1, groups=np.array(["a", "b"]))
    one_product_each = np.array(["a", "a", "a", "b", "b", "b"])
    with pytest.raises(ValueError, match="counting products"):
        stratified_folds(targets, 2, 1, groups=one_product_each)
