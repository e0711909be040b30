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
from tests.aws_local import REPO, as_built, resource, state_machine_definition, template

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fashion-classifier:latest"


@pytest.fixture(scope="module")
def deployed(monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CloudFormation resources SAM makes of the template (``ImageUri`` as after build)."""
    from samtranslator.translator.transform import transform

    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")
    source = as_built(template(), IMAGE_URI)

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


def test_the_upload_function_is_the_same_image_with_the_uploads_handler(
    deployed: dict[str, Any],
) -> None:
    upload, predict = resource("UploadFunction"), resource("PredictFunction")
    (command,) = upload["Properties"]["ImageConfig"]["Command"]
    module, name = command.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    assert upload["Metadata"] == predict["Metadata"]  # same Dockerfile, context and tag
    assert upload["Properties"]["PackageType"] == "Image"
    assert deployed["UploadFunction"]["Properties"]["MemorySize"] == {"Ref": "MemorySize"}


def test_every_variable_the_upload_function_sets_is_read_by_the_code(
    deployed: dict[str, Any],
) -> None:
    names = deployed["UploadFunction"]["Properties"]["Environment"]["Variables"]
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
    definition = state_machine_definition()
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


# -- who may invoke, how many at once, and what is written once -------------------------


def test_every_lambda_permission_names_its_source_and_this_account(
    deployed: dict[str, Any],
) -> None:
    """Without a SourceArn, any bucket of the account could send the upload function events
    of its own; without SourceAccount, a bucket of that name in another account could."""
    permissions = {
        name: item["Properties"]
        for name, item in deployed.items()
        if item["Type"] == "AWS::Lambda::Permission"
    }
    assert {"UploadFunctionUploadPermission", "PredictApiPermission"} <= set(permissions)
    for name, permission in permissions.items():
        assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}, name
        assert "SourceArn" in permission, name
    upload = permissions["UploadFunctionUploadPermission"]
    assert upload["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${UploadsBucketName}"}
    assert upload["FunctionName"] == {"Ref": "UploadFunction"}
    assert "UploadFunctionUploadPermission" in deployed["UploadsBucket"]["DependsOn"]


def test_the_upload_function_has_a_reserved_concurrency_the_backfill_keeps_under(
    deployed: dict[str, Any],
) -> None:
    from lambda_function import backfill

    properties = deployed["UploadFunction"]["Properties"]
    assert properties["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasUploadConcurrency", {"Ref": "UploadConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    parameter = template()["Parameters"]["UploadConcurrency"]
    assert backfill.DEFAULT_MAX_CONCURRENCY <= parameter["Default"] <= parameter["MaxValue"]
    assert parameter["MaxValue"] == backfill.MAX_CONCURRENCY


def test_what_both_functions_share_is_written_once_in_globals(deployed: dict[str, Any]) -> None:
    shared = template()["Globals"]["Function"]
    assert {"Architectures", "MemorySize", "LoggingConfig", "Environment"} <= set(shared)
    for name in ("PredictFunction", "UploadFunction"):
        written = resource(name)["Properties"]
        assert not {"Architectures", "MemorySize"} & set(written), name
        assert set(written["LoggingConfig"]) == {"LogGroup"}, name
        assert not set(shared["Environment"]["Variables"]) & set(
            written["Environment"]["Variables"]
        ), name
        deployed_function = deployed[name]["Properties"]
        assert deployed_function["LoggingConfig"]["LogFormat"] == "JSON"
        assert set(shared["Environment"]["Variables"]) <= set(
            deployed_function["Environment"]["Variables"]
        )


STATE_TYPES = {"Task", "Map", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel"}


def check_states(machine: dict[str, Any], where: str) -> list[str]:
    """Amazon States Language's structural rules, for ``machine`` and its nested machines:
    StartAt names a state, every Next resolves, every state that can end says so."""
    states = machine.get("States")
    assert isinstance(states, dict) and states, f"{where}: no States"
    assert machine.get("StartAt") in states, f"{where}: StartAt {machine.get('StartAt')!r}"
    problems = []
    for name, state in states.items():
        kind = state.get("Type")
        if kind not in STATE_TYPES:
            problems.append(f"{where}.{name}: Type {kind!r}")
        if kind in {"Task", "Map", "Pass", "Wait", "Parallel"}:
            if ("Next" in state) == bool(state.get("End")):
                problems.append(f"{where}.{name}: exactly one of Next and End")
            if "Next" in state and state["Next"] not in states:
                problems.append(f"{where}.{name}: Next {state['Next']!r}")
        for rule in state.get("Retry", []):
            if not rule.get("ErrorEquals"):
                problems.append(f"{where}.{name}: a Retry without ErrorEquals")
        if kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            problems += check_states(processor, f"{where}.{name}")
    return problems


def test_the_state_machine_file_is_a_valid_definition_with_the_templates_substitutions() -> None:
    text = (REPO / resource("BackfillStateMachine")["Properties"]["DefinitionUri"]).read_text()
    definition = state_machine_definition()
    assert check_states(definition, "backfill") == []
    broken = json.loads(json.dumps(definition))
    (state,) = broken["States"].values()
    state["Next"] = "Nowhere"
    state["ItemProcessor"]["States"]["ClassifyBatch"]["Type"] = "Lambda"
    assert len(check_states(broken, "broken")) == 3  # the checker does find what is wrong
    used = set(re.findall(r"\$\{(\w+)\}", text))
    given = set(resource("BackfillStateMachine")["Properties"]["DefinitionSubstitutions"])
    assert used == given == {"UploadFunctionArn", "ReportBucket"}
    assert "Definition" not in resource("BackfillStateMachine")["Properties"]
    assert json.loads(json.dumps(definition)) == definition  # plain JSON once substituted
