"""template.yaml's upload path and backfill agree with the code, as SAM deploys them.

The template goes through SAM's own translator (offline), so what is checked is the
CloudFormation that ``sam deploy`` would create. The linters run in ``make lint-deploy``.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest

from lambda_function import results
from lambda_function.photos import Photo
from lambda_function.results import Outcome
from tests.aws_local import REPO, resource, template

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fashion-classifier:latest"


@pytest.fixture(scope="module")
def deployed(monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CloudFormation resources SAM makes of the template (``ImageUri`` as after build)."""
    from samtranslator.translator.transform import transform

    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")
    source = template()
    for item in source["Resources"].values():
        if item["Type"] == "AWS::Serverless::Function":
            item["Properties"]["ImageUri"] = IMAGE_URI

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    translated = transform(source, {"UploadsBucketName": "shop-uploads"}, NoManagedPolicies())
    return dict(translated["Resources"])


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in role["Properties"]["Policies"]:
        if "Fn::If" in policy:
            continue  # optional (ReadBucket), off by default
        found += policy["PolicyDocument"]["Statement"]
    return found


def test_the_upload_function_is_the_same_image_with_the_uploads_handler() -> None:
    upload, predict = resource("UploadFunction"), resource("PredictFunction")
    (command,) = upload["Properties"]["ImageConfig"]["Command"]
    module, name = command.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    assert upload["Metadata"] == predict["Metadata"]  # same Dockerfile, context and tag
    assert upload["Properties"]["PackageType"] == "Image"
    assert upload["Properties"]["MemorySize"] == {"Ref": "MemorySize"}


def test_every_variable_the_upload_function_sets_is_read_by_the_code() -> None:
    names = resource("UploadFunction")["Properties"]["Environment"]["Variables"]
    sources = "".join(p.read_text() for p in (REPO / "lambda_function").glob("*.py"))
    for name in names:
        assert f'"{name}"' in sources, name


def test_photos_created_under_the_prefix_invoke_the_upload_function(
    deployed: dict[str, Any],
) -> None:
    (notification,) = deployed["UploadsBucket"]["Properties"]["NotificationConfiguration"][
        "LambdaConfigurations"
    ]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Function"] == {"Fn::GetAtt": ["UploadFunction", "Arn"]}
    rules = notification["Filter"]["S3Key"]["Rules"]
    assert rules[0] == {"Name": "prefix", "Value": {"Ref": "UploadsPrefix"}}
    assert rules[1]["Fn::If"][0] == "HasUploadsSuffix"
    permission = deployed["UploadFunctionUploadPermission"]["Properties"]
    assert permission["Principal"] == "s3.amazonaws.com"


def test_what_still_fails_after_the_retries_goes_to_the_queue_and_raises_an_alarm(
    deployed: dict[str, Any],
) -> None:
    config = deployed["UploadFunctionEventInvokeConfig"]["Properties"]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": "UploadFailures.Arn"
    }
    sends = [
        s for s in statements(deployed["UploadFunctionRole"]) if s["Action"] == "sqs:SendMessage"
    ]
    assert sends and sends[0]["Resource"] == {"Fn::GetAtt": "UploadFailures.Arn"}
    alarm = deployed["UploadFailuresAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": "UploadFailures.QueueName"}
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert deployed["UploadFailures"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_the_results_table_is_on_demand_and_keyed_as_the_rows_are() -> None:
    table = resource("ResultsTable")["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}  # for consumers
    keys = [k["AttributeName"] for k in table["KeySchema"]]
    row = results.row(Outcome(Photo("b", "k.jpg", "e" * 32)), "v1")
    assert keys == ["photo", "etag"] and all(key in row for key in keys)
    assert resource("UploadFunction")["Properties"]["Environment"]["Variables"][
        results.TABLE_VARIABLE
    ] == {"Ref": "ResultsTable"}


def test_the_upload_function_reads_only_the_uploads_and_catalogue_prefixes(
    deployed: dict[str, Any],
) -> None:
    found = statements(deployed["UploadFunctionRole"])
    (read,) = [s for s in found if s.get("Sid") == "ReadUploadsAndCatalogue"]
    patterns = [json.dumps(resource) for resource in read["Resource"]]
    assert "${UploadsPrefix}*" in patterns[0] and "${CataloguePrefix}*" in patterns[1]
    (write,) = [s for s in found if s.get("Sid") == "WriteResults"]
    assert sorted(write["Action"]) == ["dynamodb:BatchGetItem", "dynamodb:PutItem"]


def test_the_backfill_lists_only_the_catalogue_prefix_and_runs_its_batches(
    deployed: dict[str, Any],
) -> None:
    found = statements(deployed["BackfillStateMachineRole"])
    (listing,) = [s for s in found if s.get("Sid") == "ListOnlyTheCataloguePrefix"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${CataloguePrefix}*"}}}
    (start,) = [s for s in found if s.get("Sid") == "RunTheBatchesAsChildWorkflows"]
    machine = deployed["BackfillStateMachine"]["Properties"]
    assert machine["StateMachineName"] == {"Fn::Sub": "${AWS::StackName}-backfill"}
    assert start["Resource"]["Fn::Sub"].endswith(":stateMachine:${AWS::StackName}-backfill")
    invoke = [s for s in found if "lambda:InvokeFunction" in json.dumps(s)]
    assert invoke and "UploadFunction" in json.dumps(invoke)


def test_the_backfill_map_is_distributed_batched_bounded_and_reported() -> None:
    definition = resource("BackfillStateMachine")["Properties"]["Definition"]
    (name,) = definition["States"]
    state = definition["States"][name]
    assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert state["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "EXPRESS",
    }
    assert {"MaxItemsPerBatchPath", "BatchInput"} <= set(state["ItemBatcher"])
    assert {"MaxConcurrencyPath", "ToleratedFailurePercentagePath", "ResultWriter"} <= set(state)
    outer = {k: v for k, v in state.items() if k != "ItemProcessor"}
    reads = re.findall(r"\$\.(\w+)", json.dumps(outer))
    from lambda_function.backfill import Options

    assert set(reads) == set(Options("b", "p/").execution_input())  # what the command sends


def test_the_event_files_are_what_sam_generates() -> None:
    generated = json.loads((REPO / "events" / "s3-put.json").read_text())
    record = generated["Records"][0]
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert set(record["s3"]["object"]) == {"key", "size", "eTag", "sequencer"}
