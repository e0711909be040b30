"""The safe rollout in template.yaml, as CloudFormation receives it (SAM's own translator,
offline) and as cfn-lint reads it: a new version takes traffic only after the pre-traffic
check passed on it, then gradually, and the function's alarms roll it back."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from lambda_function import deploy_check
from tests.test_template import TEMPLATE, of_type, translate

ROLLBACK_ALARMS = {
    "ServerErrorRateAlarm",
    "LatencyP99Alarm",
    "InitFailuresAlarm",
    "FunctionErrorsAlarm",
    "NewVersionErrorsAlarm",
}
"""What a bad version raises. ThrottlesAlarm stays out: throttling is concurrency, the
same for every version, and would roll back a healthy model under load."""


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def version_of(resources: dict[str, Any]) -> str:
    (logical_id,) = of_type(resources, "AWS::Lambda::Version")
    return logical_id


@pytest.mark.parametrize(
    "kind", ["Canary10Percent5Minutes", "Linear10PercentEvery1Minute", "AllAtOnce"]
)
def test_the_deployment_type_parameter_picks_codedeploys_traffic_shift(kind) -> None:
    resources = translate(DeploymentType=kind)["Resources"]
    (group,) = of_type(resources, "AWS::CodeDeploy::DeploymentGroup").values()
    name = group["Properties"]["DeploymentConfigName"]["Fn::Sub"]
    assert name == ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": kind}]
    assert group["Properties"]["DeploymentStyle"]["DeploymentOption"] == "WITH_TRAFFIC_CONTROL"


def test_the_default_is_a_canary_and_every_choice_is_a_predefined_lambda_config() -> None:
    spec = TEMPLATE["Parameters"]["DeploymentType"]
    assert spec["Default"].startswith("Canary")
    for kind in spec["AllowedValues"]:
        assert kind == "AllAtOnce" or kind.startswith(("Canary10Percent", "Linear10Percent"))


def test_the_function_s_alarms_roll_a_new_version_back() -> None:
    resources = translate()["Resources"]
    (group,) = of_type(resources, "AWS::CodeDeploy::DeploymentGroup").values()
    alarms = group["Properties"]["AlarmConfiguration"]
    assert alarms["Enabled"] is True
    assert {a["Name"]["Ref"] for a in alarms["Alarms"]} == ROLLBACK_ALARMS
    assert set(of_type(resources, "AWS::CloudWatch::Alarm")) >= ROLLBACK_ALARMS
    rollback = group["Properties"]["AutoRollbackConfiguration"]
    assert rollback["Enabled"] is True
    assert {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"} <= set(rollback["Events"])


def test_one_alarm_watches_the_new_version_alone() -> None:
    """The function-wide alarms see a canary's failures diluted ten times; this one reads
    Lambda's Errors of the version the deployment publishes, through the alias."""
    resources = translate()["Resources"]
    (alias,) = of_type(resources, "AWS::Lambda::Alias").values()
    alarm = resources["NewVersionErrorsAlarm"]["Properties"]
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert dimensions == {
        "FunctionName": {"Ref": "PredictFunction"},
        "Resource": {"Fn::Sub": "${PredictFunction}:" + alias["Properties"]["Name"]},
        "ExecutedVersion": {"Fn::GetAtt": [version_of(resources), "Version"]},
    }


def test_the_alias_moves_only_after_the_pre_traffic_check() -> None:
    resources = translate()["Resources"]
    (alias,) = of_type(resources, "AWS::Lambda::Alias").values()
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": "PreTrafficCheckFunction"}
    assert alias["Properties"]["FunctionVersion"] == {
        "Fn::GetAtt": [version_of(resources), "Version"]
    }


def test_the_check_invokes_the_version_this_deployment_publishes() -> None:
    resources = translate()["Resources"]
    hook = resources["PreTrafficCheckFunction"]["Properties"]
    target = {"Ref": version_of(resources)}
    assert hook["Environment"]["Variables"][deploy_check.TARGET] == target
    (policy,) = resources["PreTrafficCheckFunctionRole"]["Properties"]["Policies"]
    granted = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(granted) == {"InvokeTheNewVersion", "ReportTheVerdict"}
    assert granted["InvokeTheNewVersion"]["Action"] == "lambda:InvokeFunction"
    assert granted["InvokeTheNewVersion"]["Resource"] == target
    report = granted["ReportTheVerdict"]
    assert report["Action"] == "codedeploy:PutLifecycleEventHookExecutionStatus"
    assert report["Resource"]["Fn::Sub"].endswith(
        ":deploymentgroup:${ServerlessDeploymentApplication}/*"
    )


def test_codedeploy_may_invoke_the_check() -> None:
    """SAM's CodeDeploy role carries AWSCodeDeployRoleForLambda, which may invoke only
    functions whose name starts with CodeDeployHook_."""
    resources = translate()["Resources"]
    role = resources["CodeDeployServiceRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSCodeDeployRoleForLambda"
    ]
    name = resources["PreTrafficCheckFunction"]["Properties"]["FunctionName"]["Fn::Sub"]
    assert name.startswith("CodeDeployHook_")
    assert len(name.replace("${AWS::StackName}", "s" * 49)) <= 64  # Lambda's name limit


def test_the_check_is_the_same_image_with_its_own_handler_and_time() -> None:
    resources = translate()["Resources"]
    hook, predict = resources["PreTrafficCheckFunction"], resources["PredictFunction"]
    (command,) = hook["Properties"]["ImageConfig"]["Command"]
    module, name = command.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is deploy_check.lambda_handler
    assert hook["Metadata"] == predict["Metadata"]
    assert hook["Properties"]["Code"] == predict["Properties"]["Code"]
    assert hook["Properties"]["Architectures"] == predict["Properties"]["Architectures"]
    assert hook["Properties"]["Timeout"] > 2 * deploy_check.INVOKE_TIMEOUT_S
    logging = hook["Properties"]["LoggingConfig"]
    assert logging["LogFormat"] == "JSON"
    assert logging["LogGroup"] == {"Ref": "PreTrafficCheckLogGroup"}
    assert "AutoPublishAlias" not in TEMPLATE["Resources"]["PreTrafficCheckFunction"]["Properties"]


def test_cfn_lint_finds_nothing_in_the_template() -> None:
    from cfnlint.api import ManualArgs, lint  # type: ignore[import-untyped]

    from tests.test_template import REPO

    matches = lint((REPO / "template.yaml").read_text(), config=ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches] == []
