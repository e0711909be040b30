"""The feedback loop's resources in template.yaml, as SAM's translator and cfn-lint see them:
the table, the function behind POST /feedback, the predict function's right to store
suggestions, and the acceptance and drift alarms (metric math with a volume guard)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lambda_function import feedback, suggestions
from tests.test_template import REPO, of_type, translate

CFN_LINT = [
    Path(os.environ.get("DEPLOY_VENV", REPO / ".venv-deploy")) / "bin" / "cfn-lint",
    Path("/work/main/.venv-deploy/bin/cfn-lint"),
]


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_the_feedback_table_is_keyed_by_suggestion_and_forgets_unjudged_ones() -> None:
    table = translate()["Resources"]["FeedbackTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "suggestion_id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_post_feedback_reaches_its_own_function_with_the_apis_auth() -> None:
    resources = translate()["Resources"]
    function = resources["FeedbackFunction"]["Properties"]
    assert function["ImageConfig"]["Command"] == ["lambda_function.feedback.lambda_handler"]
    variables = function["Environment"]["Variables"]
    assert variables[feedback.TABLE_VARIABLE] == {"Ref": "FeedbackTable"}
    route = resources["FeedbackRoute"]["Properties"]
    predict_route = resources["PredictRoute"]["Properties"]
    assert route["RouteKey"] == "POST /feedback"
    assert route["AuthorizationType"] == predict_route["AuthorizationType"]
    assert route["AuthorizerId"] == predict_route["AuthorizerId"]
    permission = resources["FeedbackApiPermission"]["Properties"]
    assert permission["SourceArn"]["Fn::Sub"].endswith("/*/POST/feedback")
    predict = resources["PredictFunction"]["Properties"]["Environment"]["Variables"]
    assert predict[suggestions.TABLE_VARIABLE] == {"Ref": "FeedbackTable"}


def test_each_function_may_touch_the_feedback_table_only_as_it_needs() -> None:
    resources = translate()["Resources"]
    roles = {
        "PredictFunctionRole": {"dynamodb:BatchWriteItem"},
        "FeedbackFunctionRole": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    }
    for role, actions in roles.items():
        granted: set[str] = set()
        for policy in resources[role]["Properties"].get("Policies", []):
            document = policy.get("PolicyDocument", policy)
            if "Fn::If" in document:
                continue  # the optional S3 grants
            for statement in document["Statement"]:
                if statement.get("Resource") == {"Fn::GetAtt": ["FeedbackTable", "Arn"]}:
                    action = statement["Action"]
                    granted |= set(action if isinstance(action, list) else [action])
        assert granted == actions, role


@pytest.mark.parametrize(
    ("alarm", "parameter", "guard"),
    [
        ("ConfidentAcceptanceAlarm", "ConfidentAcceptanceMin", "FeedbackMinSamples"),
        ("DriftConfidentRateAlarm", "DriftConfidentRateMin", "DriftMinAnswers"),
        ("DriftOutOfCatalogueAlarm", "DriftOutOfCatalogueRateMax", "DriftMinAnswers"),
    ],
)
def test_the_loop_alarms_need_a_sustained_change_on_enough_samples(alarm, parameter, guard) -> None:
    properties = translate()["Resources"][alarm]["Properties"]
    assert properties["Threshold"] == {"Ref": parameter}
    assert properties["EvaluationPeriods"] == properties["DatapointsToAlarm"] >= 2
    (expression,) = [m for m in properties["Metrics"] if "Expression" in m]
    assert "${" + guard + "}" in expression["Expression"]["Fn::Sub"]
    assert expression.get("ReturnData", True) is True
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_loop_resources_pass_cfn_lint() -> None:
    linter = next((p for p in CFN_LINT if p.is_file()), None) or shutil.which("cfn-lint")
    if linter is None:
        pytest.skip("cfn-lint is not installed (make setup-deploy)")
    result = subprocess.run(
        [str(linter), str(REPO / "template.yaml")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_translated_template_has_the_loop_resources() -> None:
    resources = translate()["Resources"]
    assert {"FeedbackTable", "FeedbackFunction", "FeedbackRoute"} <= set(resources)
    assert of_type(resources, "AWS::Lambda::Function")["FeedbackFunction"]
