"""The backfill: the template's Distributed Map, its invocation schema, and the command.

The state machine in ``template.yaml`` is created in moto's Step Functions and started by
``python -m lambda_function.backfill``. moto does not run a Distributed Map with an
ItemBatcher, so the batches are built the way the engine documents them, from the
template's own ItemBatcher/BatchInput and a real ``ListObjectsV2`` of the moto bucket, and
handed to the upload handler as the Lambda task's ``Payload.$: $`` would.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambda_function import backfill, handler, uploads
from lambda_function.failures import TransientError
from tests import aws_local
from tests.aws_local import (
    backfill_definition,
    create_results_table,
    distributed_map_batches,
    rows,
)
from tests.lambda_testing import LABELS, RED, FakeContext, image_bytes

BUCKET = "shop-catalogue"
PREFIX = "catalogue/"
TABLE = "backfill-results"
PER_LABEL = 5
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:fashion-upload"


@pytest.fixture(scope="module")
def catalogue(data_dir: Path, tiny_model: Path) -> Iterator[dict[str, Any]]:
    """A moto bucket of 50 dataset photos (5 per category) under catalogue/, plus a corrupt
    file, a folder placeholder and a photo outside the prefix; the results table."""
    with aws_local.moto_endpoint(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(tiny_model))
        patch.setenv("RESULTS_TABLE", TABLE)
        handler.get_service.cache_clear()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        create_results_table(TABLE)
        photos = {}
        for label in LABELS:
            for path in sorted((data_dir / "test" / label).glob("*.jpg"))[:PER_LABEL]:
                key = f"{PREFIX}{label}/{path.name}"
                photos[key] = path.read_bytes()
                s3.put_object(Bucket=BUCKET, Key=key, Body=photos[key])
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}notes/readme.txt", Body=b"not a photo")
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}empty-folder/", Body=b"")
        s3.put_object(Bucket=BUCKET, Key="elsewhere/red.jpg", Body=image_bytes(RED))
        yield {"s3": s3, "photos": photos}
        handler.get_service.cache_clear()


def execution_input() -> dict[str, Any]:
    return backfill.Options(BUCKET, PREFIX, batch_size=16).execution_input()


def batches() -> list[dict[str, Any]]:
    """The batches the template's Map hands its function for :func:`execution_input`."""
    given = execution_input()
    batcher = backfill_definition(FUNCTION_ARN, BUCKET)["States"]["ClassifyEveryPhoto"][
        "ItemBatcher"
    ]
    batch_input = {
        name.removesuffix(".$"): given[path.removeprefix("$.")]
        for name, path in batcher["BatchInput"].items()
    }
    size = given[batcher["MaxItemsPerBatchPath"].removeprefix("$.")]
    return distributed_map_batches(BUCKET, given["prefix"], batch_input, size)


def run_backfill() -> list[dict[str, Any]]:
    """Every batch through the upload function's handler, as the Map's Lambda task does."""
    return [uploads.lambda_handler(batch, FakeContext()) for batch in batches()]


def service_answer(data: bytes) -> dict[str, Any]:
    return handler.lambda_handler({"image": base64.b64encode(data).decode()}, FakeContext())


# -- the state machine and the command ------------------------------------------------


def test_the_template_state_machine_is_accepted_and_the_command_starts_it(
    catalogue: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="fashion-backfill",
        definition=json.dumps(backfill_definition(FUNCTION_ARN, BUCKET)),
        roleArn="arn:aws:iam::123456789012:role/backfill",
    )["stateMachineArn"]

    code = backfill.main([f"s3://{BUCKET}/{PREFIX}", "--state-machine", arn, "--batch-size", "16"])

    out = capsys.readouterr().out
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert code == 0
    assert f"Execution: {execution['executionArn']}" in out
    assert "describe-map-run" in out
    started = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(started["input"]) == execution_input()


def test_a_dry_run_counts_the_objects_and_starts_nothing(
    catalogue: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert backfill.main([f"s3://{BUCKET}/{PREFIX}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(catalogue['photos']) + 1} objects" in out  # the photos and the text file
    assert "2 batches of up to 32" in out and "Nothing started" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["https://example.com/catalogue/"], "Expected s3://bucket/prefix/"),
        ([f"s3://{BUCKET}/{PREFIX}"], "Expected --state-machine ARN"),
        ([f"s3://{BUCKET}/{PREFIX}", "--batch-size", "0", "--dry-run"], "--batch-size in [1, 64]"),
        (
            [f"s3://{BUCKET}/{PREFIX}", "--max-concurrency", "10000", "--dry-run"],
            "Expected --max-concurrency in [1, 100]. Received: 10000",
        ),
    ],
)
def test_a_bad_command_line_says_what_was_expected(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(backfill.STATE_MACHINE_VARIABLE, raising=False)
    assert backfill.main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_stack_outputs_name_the_state_machine_and_bound_the_prefix(
    catalogue: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {
        "BackfillStateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:x",
        "CatalogueBucket": BUCKET,
        "CataloguePrefix": PREFIX,
    }
    stack = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName="shop", TemplateBody=json.dumps(stack))
    options = backfill.Options(BUCKET, f"{PREFIX}dress/", stack="shop")
    assert backfill.state_machine_arn(options) == outputs["BackfillStateMachineArn"]

    assert backfill.main([f"s3://{BUCKET}/elsewhere/", "--stack", "shop"]) == 2
    assert f"Expected a URI under s3://{BUCKET}/{PREFIX}" in capsys.readouterr().err


def test_more_batches_at_once_than_the_upload_function_may_run_are_refused(
    catalogue: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    role = boto3.client("iam").create_role(RoleName="upload-role", AssumeRolePolicyDocument="{}")
    functions = boto3.client("lambda")
    functions.create_function(
        FunctionName="shop-upload",
        Role=role["Role"]["Arn"],
        PackageType="Image",
        Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fashion:1"},
    )
    functions.put_function_concurrency(FunctionName="shop-upload", ReservedConcurrentExecutions=8)
    outputs = {
        "BackfillStateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:y",
        "CatalogueBucket": BUCKET,
        "CataloguePrefix": PREFIX,
        "UploadFunctionName": "shop-upload",
    }
    stack = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName="bounded", TemplateBody=json.dumps(stack))
    within = backfill.Options(BUCKET, PREFIX, stack="bounded", max_concurrency=8)
    assert backfill.state_machine_arn(within) == outputs["BackfillStateMachineArn"]

    argv = [f"s3://{BUCKET}/{PREFIX}", "--stack", "bounded", "--max-concurrency", "9"]
    assert backfill.main(argv) == 2
    assert (
        "Expected --max-concurrency of at most 8 (the reserved concurrency of shop-upload, "
        "the stack's UploadConcurrency). Received: 9"
    ) in capsys.readouterr().err


# -- the batches: every photo gets its row ----------------------------------------------


def test_the_batches_follow_the_documented_invocation_schema(catalogue: dict[str, Any]) -> None:
    documented = aws_local.load_event("backfill-batch.json")
    made = batches()
    assert [len(b["Items"]) for b in made] == [16, 16, 16, 4]  # 50 photos, text, folder
    for batch in made:
        assert set(batch) == set(documented)
        assert batch["BatchInput"] == {"bucket": BUCKET}
        assert all(set(item) == set(documented["Items"][0]) for item in batch["Items"])
    task = backfill_definition(FUNCTION_ARN, BUCKET)["States"]["ClassifyEveryPhoto"][
        "ItemProcessor"
    ]["States"]["ClassifyBatch"]
    assert task["Parameters"] == {"FunctionName": FUNCTION_ARN, "Payload.$": "$"}


def test_a_backfill_gives_every_photo_its_right_row(catalogue: dict[str, Any]) -> None:
    answers = run_backfill()

    by_key = {row["key"]: row for row in rows(TABLE)}
    assert set(by_key) == {*catalogue["photos"], f"{PREFIX}notes/readme.txt"}
    for key, data in catalogue["photos"].items():
        row, expected = by_key[key], service_answer(data)
        assert (row["status"], row["source"]) == ("classified", "backfill")
        assert row["category"] == expected["category"], key
        assert row["scores"] == pytest.approx(expected["scores"], abs=1e-4), key
        assert row["bytes"] == len(data) and row["width"] > 0
    text = by_key[f"{PREFIX}notes/readme.txt"]
    assert (text["status"], text["error_code"]) == ("failed", "unsupported_image")

    results = {p["key"]: p for answer in answers for p in answer["photos"]}
    assert results[f"{PREFIX}notes/readme.txt"]["error"] == "unsupported_image"
    assert all(results[key]["category"] == by_key[key]["category"] for key in catalogue["photos"])
    assert {p["row"] for p in results.values()} == {"written"}


def test_a_second_backfill_leaves_the_rows_as_they_are(catalogue: dict[str, Any]) -> None:
    run_backfill()
    before = rows(TABLE)

    answers = run_backfill()

    assert sorted(rows(TABLE), key=lambda r: r["key"]) == sorted(before, key=lambda r: r["key"])
    assert {p["row"] for answer in answers for p in answer["photos"]} == {"unchanged"}


def test_a_transient_failure_in_a_batch_is_an_error_the_map_retries(
    catalogue: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESULTS_TABLE", "no-such-table")
    with pytest.raises(TransientError) as raised:
        uploads.lambda_handler(batches()[0], FakeContext())

    retry = backfill_definition(FUNCTION_ARN, BUCKET)["States"]["ClassifyEveryPhoto"][
        "ItemProcessor"
    ]["States"]["ClassifyBatch"]["Retry"][0]
    assert type(raised.value).__name__ in retry["ErrorEquals"]  # Lambda's errorType


def test_a_stack_without_outputs_has_none(catalogue: dict[str, Any]) -> None:
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    boto3.client("cloudformation").create_stack(
        StackName="no-outputs", TemplateBody=json.dumps(template)
    )
    assert backfill.stack_outputs("no-outputs") == {}


def test_the_help_says_what_each_option_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        backfill.parse_args(["--help"])
    assert "batches in flight at once (Map MaxConcurrency)" in capsys.readouterr().out


def test_each_batch_logs_one_line_that_names_it_a_backfill(
    catalogue: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lambda_function")
    (batch, *_) = batches()

    uploads.lambda_handler(batch, FakeContext())

    (line,) = [json.loads(r.message) for r in caplog.records if '"event"' in r.message]
    assert line["event"] == "backfill"
