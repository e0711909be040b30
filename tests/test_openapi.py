"""docs/openapi.yaml is the contract: the function's real answers must validate against it.

Each status the handler can answer is produced here through an HTTP API event, and its body
is checked against the schema the document gives for that status, so the two cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from samtranslator.yaml_helper import yaml_parse

from lambda_function import errors, feedback, handler
from tests.lambda_testing import (
    GREEN,
    FakeContext,
    b64,
    build_model,
    image_bytes,
    load_event,
)

REPO = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
OPERATION = SPEC["paths"]["/predict"]["post"]
GATEWAY_STATUSES = {401, 403, 429, 502, 503}
"""Answered by API Gateway itself (auth, throttling, a failed function), never the handler."""


def resolved(node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(target)
        return {key: resolved(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value) for value in node]
    return node


def schema_for(status: int, operation: dict[str, Any] = OPERATION) -> dict[str, Any]:
    return resolved(operation["responses"][str(status)]["content"]["application/json"]["schema"])


def check(
    response: dict[str, Any], status: int, operation: dict[str, Any] = OPERATION
) -> dict[str, Any]:
    """``response`` (an HTTP API answer) has ``status`` and a body its schema accepts."""
    assert response["statusCode"] == status, response["body"]
    assert response["headers"]["Content-Type"] == "application/json"
    body = json.loads(response["body"])
    OAS30Validator(schema_for(status, operation)).validate(body)
    return body


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "model.onnx", image_size=32)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, tiny_model: Path):  # type: ignore[no-untyped-def]
    def apply(**env: object) -> None:
        for name, value in {"MODEL_PATH": tiny_model, "ALLOW_LOOPBACK_FOR_TESTS": 1, **env}.items():
            monkeypatch.setenv(name, str(value))
        handler.get_service.cache_clear()

    apply()
    yield apply
    handler.get_service.cache_clear()


def post(body: Any = None, *, raw: bytes | None = None, content_type: str = "") -> dict[str, Any]:
    """POST /predict through the HTTP API (payload 2.0), as API Gateway invokes the alias."""
    event = load_event("http-api-url.json")
    if raw is not None:
        event["body"], event["isBase64Encoded"] = b64(raw), True
    else:
        event["body"], event["isBase64Encoded"] = json.dumps(body), False
    if content_type:
        event["headers"] = {**event["headers"], "content-type": content_type}
    return handler.lambda_handler(event, FakeContext())


def test_the_document_is_valid_openapi_3() -> None:
    validate_spec(SPEC)
    assert SPEC["openapi"].startswith("3.")


def test_the_api_route_is_the_documented_operation() -> None:
    template = yaml_parse((REPO / "template.yaml").read_text())
    route = template["Resources"]["PredictRoute"]["Properties"]["RouteKey"]
    assert route == "POST /predict" and list(SPEC["paths"]) == ["/predict", "/feedback"]
    assert template["Resources"]["FeedbackRoute"]["Properties"]["RouteKey"] == "POST /feedback"


def test_a_prediction_by_url_is_a_documented_200(configure, images) -> None:
    body = check(post({"url": images.url("/green.jpg")}), 200)
    assert set(body["scores"]) >= {body["category"]}


def test_an_uploaded_image_is_a_documented_200(configure) -> None:
    check(post(raw=image_bytes(GREEN), content_type="image/jpeg"), 200)
    check(post({"image": b64(image_bytes(GREEN))}), 200)


def test_a_batch_with_a_failing_item_is_a_documented_200(configure, images) -> None:
    urls = [images.url("/green.jpg"), images.url("/missing.jpg"), images.url("/notes.txt")]
    body = check(post({"urls": urls}), 200)
    assert [("error" in r, r["url"]) for r in body["results"]] == [
        (False, urls[0]),
        (True, urls[1]),
        (True, urls[2]),
    ]


HANDLER_ERRORS = {
    400: lambda images: post("not an object"),
    413: lambda images: post({"image": b64(b"x" * 5_000_000)}),
    415: lambda images: post(raw=b"%PDF-1.7", content_type="application/pdf"),
    422: lambda images: post({"url": images.url("/missing.jpg")}),
    504: lambda images: post({"url": images.url("/slow.jpg")}),
}


@pytest.mark.parametrize("status", sorted(HANDLER_ERRORS))
def test_each_client_and_upstream_error_is_documented(configure, images, status) -> None:
    configure(FETCH_TIMEOUT=0.5)
    check(HANDLER_ERRORS[status](images), status)


def test_a_missing_model_is_a_documented_500(configure, tmp_path) -> None:
    configure(MODEL_PATH=tmp_path / "absent.onnx")
    body = check(post({"image": b64(image_bytes())}), 500)
    assert body["error"]["code"] == "model_unavailable"


def test_every_status_the_handler_answers_is_documented_and_tested() -> None:
    """The statuses of every error class, plus 200, are the document's own (gateway ones
    aside), and each has a test above that produced a real answer with it."""

    def subclasses(cls: type) -> set[type]:
        return set(cls.__subclasses__()).union(*(subclasses(c) for c in cls.__subclasses__()))

    own = [c for c in subclasses(errors.ServiceError) if c.__module__ != feedback.__name__]
    answered = {200} | {cls.status for cls in own}
    answered |= {errors.ServiceError.status}
    documented = {int(status) for status in OPERATION["responses"]} - GATEWAY_STATUSES
    assert answered == documented
    assert documented == {200, 500} | set(HANDLER_ERRORS)


# -- POST /feedback ----------------------------------------------------------------------

FEEDBACK_OPERATION = SPEC["paths"]["/feedback"]["post"]


@pytest.fixture
def feedback_store(configure, monkeypatch):  # type: ignore[no-untyped-def]
    """moto in server mode with the feedback and results tables; yields its endpoint."""
    from tests.aws_local import create_results_table, moto_endpoint
    from tests.test_feedback import create_feedback_table

    with moto_endpoint() as endpoint:
        create_feedback_table("feedback")
        create_results_table("results")
        configure(FEEDBACK_TABLE="feedback", RESULTS_TABLE="results")
        yield endpoint


def post_feedback(body: Any) -> dict[str, Any]:
    event = load_event("http-api-feedback.json")
    event["body"] = json.dumps(body)
    return feedback.lambda_handler(event, FakeContext())


def test_an_answer_with_its_suggestion_id_is_a_documented_200(feedback_store) -> None:
    body = check(post({"image": b64(image_bytes(GREEN))}), 200)
    assert body["suggestion_id"] == FakeContext().aws_request_id


def test_each_feedback_answer_is_documented(feedback_store, monkeypatch) -> None:
    """Every status POST /feedback answers, produced for real and checked against the spec."""
    from tests.aws_local import dynamodb_throttling, faulty_proxy

    sid = check(post({"image": b64(image_bytes(GREEN))}), 200)["suggestion_id"]
    first = check(
        post_feedback({"suggestion_id": sid, "category": "pants"}), 200, FEEDBACK_OPERATION
    )
    again = check(
        post_feedback({"suggestion_id": sid, "category": "pants"}), 200, FEEDBACK_OPERATION
    )
    assert (first["outcome"], again["outcome"]) == ("recorded", "unchanged")
    check(post_feedback({"category": "pants"}), 400, FEEDBACK_OPERATION)
    check(post_feedback({"suggestion_id": "nope", "category": "pants"}), 404, FEEDBACK_OPERATION)
    check(post_feedback({"suggestion_id": sid, "category": "sandals"}), 422, FEEDBACK_OPERATION)
    with faulty_proxy(feedback_store) as proxy:
        proxy.fault = dynamodb_throttling("GetItem")
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        from lambda_function import results

        results.dynamodb_client.cache_clear()
        body = check(
            post_feedback({"suggestion_id": sid, "category": "hat"}), 503, FEEDBACK_OPERATION
        )
        assert body["error"]["code"] == "store_unavailable"
    results.dynamodb_client.cache_clear()
    monkeypatch.delenv("FEEDBACK_TABLE")
    check(post_feedback({"suggestion_id": sid, "category": "hat"}), 500, FEEDBACK_OPERATION)
    documented = {int(s) for s in FEEDBACK_OPERATION["responses"]} - (GATEWAY_STATUSES - {503})
    assert documented == {200, 400, 404, 422, 500, 503}
