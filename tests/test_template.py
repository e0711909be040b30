"""template.yaml as CloudFormation receives it: translated by SAM's own translator.

The translator is the code CloudFormation's ``AWS::Serverless`` transform runs, so these
tests see the resources a deploy would create, for given parameter values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from lambda_function import observe
from tests import aws_local

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = yaml_parse((REPO / "template.yaml").read_text())
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fashion-classifier:python3.12-v1"
DESCRIPTION_LIMIT = 256
"""Lambda's limit on a version's Description."""

UNVERSIONED = {
    "ProvisionedConcurrency": "set on the alias itself",
    "ReservedConcurrency": "a function-wide setting, not part of a version",
    "ReadPrefix": "IAM only: the role is shared by every version",
    "DeploymentType": "how CodeDeploy moves the alias to a version, not part of one",
}
"""Parameters of the function that do not belong in a version (and why)."""

CHANGES = {
    "MemorySize": "4096",
    "Architecture": "arm64",
    "IntraOpThreads": "3",
    "MaxBatch": "16",
    "MaxImageBytes": "2048",
    "FetchTimeout": "5",
    "ReadBucket": "shop-uploads",
    "ModelS3Uri": "s3://shop-models/fashion/serve.onnx",
    "LogLevel": "DEBUG",
}
"""One new value for each parameter that shapes a published version."""

REQUIRED = {"UploadsBucketName": "shop-uploads-test"}
"""Parameters without a default (the upload path's bucket)."""

PATTERN_WIDTHS = {"ReadBucket": 63, "IntraOpThreads": 2}
"""The longest values the AllowedPattern of these parameters admits."""


class NoManagedPolicies:
    """The translator asks IAM for managed policy names only when a template uses them."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: dict[str, Any] | None = None, **parameters: str) -> dict[str, Any]:
    """What CloudFormation deploys for ``parameters`` (with ``ImageUri`` as sam build sets it)."""
    sam = aws_local.as_built(template or TEMPLATE, IMAGE)
    return transform(sam, {**REQUIRED, **parameters}, NoManagedPolicies())


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def substitute(node: Any, parameters: dict[str, str]) -> str:
    """``Fn::Sub`` of parameters, as CloudFormation resolves it (defaults where not given)."""
    values = {k: str(v.get("Default", "")) for k, v in TEMPLATE["Parameters"].items()}
    values |= parameters
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], node["Fn::Sub"])


def published(**parameters: str) -> tuple[str, str]:
    """The version a deploy with ``parameters`` publishes, as (logical id, resolved
    Description): CloudFormation makes a new version when either changes, because a
    version's Description cannot be updated in place ("Update requires: Replacement")."""
    resources = translate(**parameters)["Resources"]
    ((logical_id, version),) = of_type(resources, "AWS::Lambda::Version").items()
    (alias,) = of_type(resources, "AWS::Lambda::Alias").values()
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [logical_id, "Version"]}
    return logical_id, substitute(version["Properties"]["Description"], parameters)


def refs(node: Any) -> set[str]:
    """Every name ``node`` refers to: ``Ref``s and ``${...}`` inside ``Fn::Sub`` strings."""
    if isinstance(node, dict):
        found = {node["Ref"]} if isinstance(node.get("Ref"), str) else set()
        sub = node.get("Fn::Sub")
        text = sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) else ""
        found |= set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", text))
        return found | set().union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


# -- every parameter change reaches the alias ---------------------------------------------


@pytest.mark.parametrize(("name", "value"), sorted(CHANGES.items()))
def test_a_parameter_only_change_publishes_a_new_version_for_the_alias(name, value) -> None:
    before, after = published(), published(**{name: value})
    assert after != before, f"changing {name} alone would leave the alias on the old version"
    assert any(token.endswith(f"={value}") for token in after[1].split())
    assert not any(token.endswith(f"={value}") for token in before[1].split())


def test_sam_alone_would_publish_nothing_for_a_parameter_change() -> None:
    """The SAM behaviour the Description works around (issue 11, finding 1): the logical
    id, SAM's only trigger, is the same whatever the parameters."""
    ids = {published(**{name: value})[0] for name, value in CHANGES.items()}
    assert ids == {published()[0]}


def test_the_same_parameters_publish_the_same_version() -> None:
    assert published() == published()
    assert published(MemorySize="4096") == published(MemorySize="4096")


def test_a_new_image_publishes_a_new_version() -> None:
    newer = aws_local.as_built(TEMPLATE, IMAGE + "-2")
    resources = transform(newer, dict(REQUIRED), NoManagedPolicies())["Resources"]
    assert next(iter(of_type(resources, "AWS::Lambda::Version"))) != published()[0]


def test_every_parameter_of_the_function_is_in_the_version_description() -> None:
    """A new parameter that shapes the function must join VersionDescription (or be listed
    in UNVERSIONED with its reason), or its changes would never reach the alias."""
    # Globals.Function is part of the function's properties (SAM merges it in).
    function = {
        **TEMPLATE["Globals"]["Function"],
        **TEMPLATE["Resources"]["PredictFunction"]["Properties"],
    }
    parameters = set(TEMPLATE["Parameters"])
    shaping = refs({k: v for k, v in function.items() if k != "VersionDescription"})
    described = refs(function["VersionDescription"])
    assert (shaping & parameters) - set(UNVERSIONED) <= described
    assert described <= parameters and not described & set(UNVERSIONED)


def test_the_description_fits_lambdas_limit_at_the_longest_parameters() -> None:
    """A version's Description holds at most 256 characters."""
    text = TEMPLATE["Resources"]["PredictFunction"]["Properties"]["VersionDescription"]
    longest = {}
    for name in re.findall(r"\$\{(\w+)\}", text["Fn::Sub"]):
        spec = TEMPLATE["Parameters"][name]
        if "AllowedValues" in spec:
            longest[name] = "x" * max(len(str(v)) for v in spec["AllowedValues"])
        elif "MaxValue" in spec:
            longest[name] = str(spec["MaxValue"])
        elif name in PATTERN_WIDTHS:
            longest[name] = "p" * PATTERN_WIDTHS[name]
        else:
            longest[name] = "m" * spec["MaxLength"]
    assert len(substitute(text, longest)) <= DESCRIPTION_LIMIT


# -- access, limits, logs -----------------------------------------------------------------


@pytest.mark.parametrize("auth", ["NONE", "AWS_IAM"])
def test_the_route_takes_the_auth_parameter(auth) -> None:
    resources = translate(ApiAuth=auth)["Resources"]
    route = resources["PredictRoute"]["Properties"]
    assert route["RouteKey"] == "POST /predict"
    assert route["AuthorizationType"]["Fn::If"][0] == "UseJwt"
    assert _resolve_if(route["AuthorizationType"], auth) == auth
    assert _resolve_if(route["AuthorizerId"], auth) == {"Ref": "AWS::NoValue"}


def _resolve_if(node: Any, auth: str) -> Any:
    """Resolve the template's two auth conditions for ``auth``."""
    conditions = {"UseJwt": auth == "JWT", "UseIam": auth == "AWS_IAM"}
    while isinstance(node, dict) and "Fn::If" in node:
        name, yes, no = node["Fn::If"]
        node = yes if conditions[name] else no
    return node


def test_jwt_auth_uses_an_authorizer_with_issuer_and_audiences() -> None:
    resources = translate(ApiAuth="JWT", JwtIssuer="https://issuer.example", JwtAudience="a,b")[
        "Resources"
    ]
    route = resources["PredictRoute"]["Properties"]
    assert _resolve_if(route["AuthorizationType"], "JWT") == "JWT"
    assert _resolve_if(route["AuthorizerId"], "JWT") == {"Ref": "JwtAuthorizer"}
    authorizer = resources["JwtAuthorizer"]
    assert authorizer["Condition"] == "UseJwt"
    config = authorizer["Properties"]["JwtConfiguration"]
    assert config == {
        "Issuer": {"Ref": "JwtIssuer"},
        "Audience": {"Fn::Split": [",", {"Ref": "JwtAudience"}]},
    }
    rule = TEMPLATE["Rules"]["JwtNeedsIssuerAndAudience"]
    assert refs(rule["Assertions"]) == {"JwtIssuer", "JwtAudience"}


def test_the_api_throttles_and_logs_every_route() -> None:
    resources = translate()["Resources"]
    stage = resources["PredictStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ThrottleRate"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurst"},
    }
    assert stage["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]
    }
    integration = resources["PredictIntegration"]["Properties"]
    alias = next(iter(of_type(resources, "AWS::Lambda::Alias")))
    assert integration["IntegrationUri"] == {"Ref": alias}
    permission = resources["PredictApiPermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": alias}
    assert permission["SourceArn"]["Fn::Sub"].endswith("${PredictApi}/*/POST/predict")


def test_reserved_concurrency_is_unset_unless_asked_for() -> None:
    function = translate()["Resources"]["PredictFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasReservedConcurrency",
            {"Ref": "ReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_logs_are_json_with_a_level_into_a_group_with_retention() -> None:
    resources = translate()["Resources"]
    logging = resources["PredictFunction"]["Properties"]["LoggingConfig"]
    assert logging == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": {"Ref": "LogLevel"},
        "SystemLogLevel": "INFO",
        "LogGroup": {"Ref": "PredictLogGroup"},
    }
    for name in ("PredictLogGroup", "ApiAccessLogGroup"):
        group = resources[name]
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert TEMPLATE["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_intra_op_threads_is_refused_at_deploy_time_unless_1_to_64_or_empty() -> None:
    pattern = re.compile(TEMPLATE["Parameters"]["IntraOpThreads"]["AllowedPattern"])
    assert all(pattern.fullmatch(v) for v in ["", "1", "9", "10", "59", "64"])
    assert not any(pattern.fullmatch(v) for v in ["0", "65", "abc", "-1", "1.5", " 2", "100"])


# -- least privilege ----------------------------------------------------------------------


def statements(resources: dict[str, Any]) -> list[dict[str, Any]]:
    role = resources["PredictFunctionRole"]
    found = []
    for policy in role["Properties"].get("Policies", []):
        document = policy.get("PolicyDocument", policy)
        if "Fn::If" in document:
            document = document["Fn::If"][1]["PolicyDocument"]
        found.extend(document["Statement"])
    return found


def test_the_role_may_get_objects_under_the_prefix_and_the_model_and_nothing_else() -> None:
    resources = translate(ReadBucket="shop-uploads", ModelS3Uri="s3://models/a/serve.onnx")
    role = resources["Resources"]["PredictFunctionRole"]
    granted = statements(resources["Resources"])
    # (its one other right, storing suggestions: tests/test_feedback_template.py)
    granted = [s for s in granted if s["Sid"] != "StoreSuggestions"]
    assert {s["Sid"] for s in granted} == {"ReadCallerImages", "ReadModel"}
    assert all(s["Action"] == "s3:GetObject" and s["Effect"] == "Allow" for s in granted)
    images = next(s for s in granted if s["Sid"] == "ReadCallerImages")
    assert images["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${ReadBucket}/${ReadPrefix}*"
    }
    model = next(s for s in granted if s["Sid"] == "ReadModel")
    assert model["Resource"]["Fn::Sub"][1]["Object"] == {
        "Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": "ModelS3Uri"}]}]
    }
    managed = role["Properties"]["ManagedPolicyArns"]
    assert managed == ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]


# -- metrics and alarms -------------------------------------------------------------------


def test_every_alarm_notifies_the_alarm_topic_which_can_email() -> None:
    resources = translate(AlarmEmail="ops@example.com")["Resources"]
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    assert set(alarms) >= {
        "ServerErrorRateAlarm",
        "LatencyP99Alarm",
        "ThrottlesAlarm",
        "InitFailuresAlarm",
        "FunctionErrorsAlarm",
    }
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_the_alarms_read_the_metrics_the_function_writes() -> None:
    """Namespace, metric names and dimensions in the alarms are those observe.py emits."""
    resources = translate()["Resources"]
    function = resources["PredictFunction"]["Properties"]
    namespace = function["Environment"]["Variables"]["METRICS_NAMESPACE"]
    assert namespace == observe.DEFAULT_NAMESPACE
    line = observe.with_metrics(
        {"request_id": "r", "source": "direct", "status": 500, "code": "model_unavailable",
         "cold_start": False, "total_ms": 1.0, "fetch_ms": 0.0, "decode_ms": 0.0,
         "inference_ms": 0.0, "bytes": 0},
        {},
    )  # fmt: skip
    emitted = {
        (m["Name"], tuple(dims))
        for d in line["_aws"]["CloudWatchMetrics"]
        for dims in d["Dimensions"]
        for m in d["Metrics"]
    }
    emitted |= {("InitFailures", ("Function",)), ("Latency", ("Function",))}
    emitters = {name: {"PredictFunction"} for name, _ in emitted}
    for extra, functions in loop_metrics().items():
        emitted |= extra
        for name, _ in extra:
            emitters[name] = functions
    for name, alarm in of_type(resources, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        stats = [
            m["MetricStat"]["Metric"] for m in properties.get("Metrics", []) if "MetricStat" in m
        ]
        for metric in stats or [properties]:
            if metric["Namespace"].startswith("AWS/"):
                continue
            assert metric["Namespace"] == namespace, name
            dimensions = tuple(d["Name"] for d in metric["Dimensions"])
            assert (metric["MetricName"], dimensions) in emitted, name
            function = metric["Dimensions"][0]["Value"]["Ref"]
            assert function in emitters[metric["MetricName"]], name


def loop_metrics() -> dict[frozenset[tuple[str, tuple[str, ...]]], frozenset[str]]:
    """The feedback and answer-distribution metrics, and the functions that write them."""
    from lambda_function import answer_metrics, feedback

    suggestion = feedback.Suggestion("api", "v1", "pants", 0.99, True, {"pants": 0.99})
    lines = {
        frozenset({"FeedbackFunction"}): [
            feedback.metrics_line(feedback.Feedback("shorts", "id"), suggestion, "recorded", {})
        ],
        frozenset({"PredictFunction", "UploadFunction"}): answer_metrics.lines(
            [{"category": "pants", "confident": True, "out_of_catalogue": False}], "direct", {}
        ),
    }
    return {
        frozenset(
            (m["Name"], tuple(dims))
            for line in documents
            for d in line["_aws"]["CloudWatchMetrics"]
            for dims in d["Dimensions"]
            for m in d["Metrics"]
        ): functions
        for functions, documents in lines.items()
    }
