"""POST /feedback: the seller's final category for a suggestion, the ground truth in the field.

The shop's backend names the suggestion one of two ways (docs/feedback.md):

- ``{"suggestion_id": ..., "category": ...}`` for an API answer (its ``suggestion_id``);
- ``{"photo": "s3://bucket/key", "etag": ..., "category": ...}`` for an upload's row.

``product_id`` (optional) groups the photos of one product: cross-validation keeps them in
one fold. The feedback is stored in the feedback table (``FEEDBACK_TABLE``) under the
suggestion's id, *with* the suggestion it judges (model version, category, probability,
confident, the categories the model knew), so a later backfill that replaces an upload's
row in the results table never loses it. Storing is idempotent: the same category again
changes nothing (``unchanged``, no metric); a different one is the seller's newer decision
(``revised``: stored, counted as ``Revisions``). The suggestion's own categories validate
the feedback: one the model does not know is a 422 that lists them; an unknown suggestion
is a 404.

Each new decision prints one EMF line: ``Accepted`` / ``Overridden`` per model version and
suggested category, and per ``Confident`` (the alarm on the acceptance rate of confident
answers reads that one).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lambda_function import events, observe, results
from lambda_function.errors import BadRequestError, ServiceError, to_service_error
from lambda_function.failures import aws_error_code

TABLE_VARIABLE = "FEEDBACK_TABLE"
MAX_ID_CHARS = 1024
RECORDED, UNCHANGED, REVISED = "recorded", "unchanged", "revised"


class UnknownSuggestionError(ServiceError):
    """404: no suggestion has this id (or this photo version has no classified row)."""

    status = 404
    code = "unknown_suggestion"


class UnknownCategoryError(ServiceError):
    """422: the category is none of those the suggesting model knows."""

    status = 422
    code = "unknown_category"


class StoreError(ServiceError):
    """503: the table could not be read or written; the backend retries the same request."""

    status = 503
    code = "store_unavailable"


@dataclass(frozen=True)
class Feedback:
    """One seller's decision, as the backend sent it."""

    category: str
    suggestion_id: str = ""
    photo: str = ""
    etag: str = ""
    product_id: str = ""

    @property
    def key(self) -> str:
        """The feedback table's key: the API answer's id, or ``photo#etag`` for an upload."""
        return self.suggestion_id or upload_key(self.photo, self.etag)


@dataclass(frozen=True)
class Suggestion:
    """What the service suggested: the part of the row the feedback is judged against."""

    kind: str
    model_version: str
    category: str
    probability: float
    confident: bool | None
    scores: dict[str, float]
    out_of_catalogue: bool | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The categories the suggesting model knows."""
        return tuple(self.scores)


def upload_key(photo: str, etag: str) -> str:
    return f"{photo}#{etag}"


def parse(payload: Any) -> Feedback:
    """The feedback in ``payload``; :class:`BadRequestError` saying what is wrong."""
    if not isinstance(payload, dict):
        raise BadRequestError(
            f"Expected a JSON object. Received: {type(payload).__name__}", code="bad_request"
        )
    by_id, by_photo = "suggestion_id" in payload, "photo" in payload or "etag" in payload
    if by_id == by_photo:
        raise BadRequestError(
            'Expected either "suggestion_id" (an API answer\'s) or "photo" and "etag" '
            f"(an upload's row). Received: {sorted(map(str, payload))[:8]}",
            code="bad_request",
        )
    fields = {"category": _text(payload, "category")}
    if by_id:
        fields["suggestion_id"] = _text(payload, "suggestion_id")
    else:
        fields["photo"], fields["etag"] = _text(payload, "photo"), _text(payload, "etag")
        if not fields["photo"].startswith("s3://"):
            raise BadRequestError(
                f'Expected "photo" as s3://bucket/key. Received: {fields["photo"][:100]!r}',
                code="bad_request",
            )
    if "product_id" in payload:
        fields["product_id"] = _text(payload, "product_id")
    return Feedback(**fields)


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        shown = type(value).__name__ if not isinstance(value, str) else f"{len(value)} characters"
        raise BadRequestError(
            f'Expected "{name}" as a non-empty string of at most {MAX_ID_CHARS} characters. '
            f"Received: {shown}",
            code="bad_request",
        )
    return value.strip()


def find(feedback: Feedback, feedback_table: str, results_table: str, client: Any) -> Suggestion:
    """The suggestion ``feedback`` judges: the stored API answer, or the upload's row."""
    if feedback.suggestion_id:
        item = _get(client, feedback_table, {"suggestion_id": {"S": feedback.suggestion_id}})
        if item is None:
            raise UnknownSuggestionError(
                f"Expected the suggestion_id of an answer from the last 90 days. "
                f"Received: {feedback.suggestion_id[:100]!r}, which is not one."
            )
        return _suggestion(item, "api")
    key = {"photo": {"S": feedback.photo}, "etag": {"S": feedback.etag}}
    item = _get(client, results_table, key) if results_table else None
    if item is None or item.get("status") != results.CLASSIFIED:
        state = "no row" if item is None else f"a {item.get('status')} row"
        raise UnknownSuggestionError(
            "Expected a classified upload (photo and etag of a row in the results table). "
            f"Received: {feedback.photo[:200]!r} etag {feedback.etag[:64]!r}, which has {state}."
        )
    return _suggestion(item, "upload")


def _get(client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = client.get_item(TableName=table, Key=key, ConsistentRead=True)
    except (ClientError, BotoCoreError) as exc:
        raise StoreError("The feedback store is unavailable; retry.", detail=str(exc)) from exc
    return results.from_item(answer["Item"]) if "Item" in answer else None


def _suggestion(row: dict[str, Any], kind: str) -> Suggestion:
    confident = row.get("confident")
    ooc = row.get("out_of_catalogue")
    return Suggestion(
        kind=kind,
        model_version=str(row.get("model_version") or "unknown"),
        category=str(row["category"]),
        probability=float(row.get("probability", 0.0)),
        confident=confident if isinstance(confident, bool) else None,
        scores=dict(row.get("scores", {})),
        out_of_catalogue=ooc if isinstance(ooc, bool) else None,
    )


def validate(feedback: Feedback, suggestion: Suggestion) -> None:
    """The category must be one the suggesting model knows."""
    if suggestion.labels and feedback.category not in suggestion.labels:
        raise UnknownCategoryError(
            f"Expected one of the model's categories: {', '.join(suggestion.labels)}. "
            f"Received: {feedback.category[:100]!r}"
        )


def store(
    feedback: Feedback, suggestion: Suggestion, table: str, client: Any, now: float | None = None
) -> str:
    """Write the decision with its suggestion: ``recorded``, ``unchanged`` or ``revised``."""
    from botocore.exceptions import BotoCoreError, ClientError

    when = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    values: dict[str, Any] = {
        "final_category": feedback.category,
        "accepted": feedback.category == suggestion.category,
        "feedback_at": when.isoformat(timespec="milliseconds"),
        "kind": suggestion.kind,
        "model_version": suggestion.model_version,
        "category": suggestion.category,
        "probability": suggestion.probability,
    }
    if suggestion.confident is not None:
        values["confident"] = suggestion.confident
    if suggestion.out_of_catalogue is not None:
        values["out_of_catalogue"] = suggestion.out_of_catalogue
    if feedback.product_id:
        values["product_id"] = feedback.product_id
    if feedback.photo:
        values |= {"photo": feedback.photo, "etag": feedback.etag}
    if suggestion.scores:
        values["scores"] = suggestion.scores
    names = {f"#{name}": name for name in values}
    update = "SET " + ", ".join(f"#{name} = :{name}" for name in values) + " REMOVE expires_at"
    try:
        answer = client.update_item(
            TableName=table,
            Key={"suggestion_id": {"S": feedback.key}},
            UpdateExpression=update,
            ConditionExpression="attribute_not_exists(final_category) OR final_category <> :final",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                ":final": {"S": feedback.category},
                **{f":{name}": results.to_attribute(value) for name, value in values.items()},
            },
            ReturnValues="UPDATED_OLD",
        )
    except ClientError as exc:
        if aws_error_code(exc) == "ConditionalCheckFailedException":
            return UNCHANGED
        raise StoreError("The feedback store is unavailable; retry.", detail=str(exc)) from exc
    except BotoCoreError as exc:
        raise StoreError("The feedback store is unavailable; retry.", detail=str(exc)) from exc
    return REVISED if "final_category" in answer.get("Attributes", {}) else RECORDED


def metrics_line(
    feedback: Feedback, suggestion: Suggestion, outcome: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """The EMF document of one new decision (``Accepted`` or ``Overridden`` is 1)."""
    accepted = feedback.category == suggestion.category
    confident = {True: "true", False: "false", None: "unknown"}[suggestion.confident]
    names = ["Accepted", "Overridden", "Feedback"] + (["Revisions"] if outcome == REVISED else [])
    directive = {
        "Dimensions": [
            ["Function"],
            ["Function", "ModelVersion"],
            ["Function", "ModelVersion", "SuggestedCategory"],
            ["Function", "Confident"],
        ],
        "Metrics": [{"Name": name, "Unit": observe.COUNT} for name in names],
    }
    line = {
        "event": "feedback",
        "outcome": outcome,
        "kind": suggestion.kind,
        "final_category": feedback.category,
    }
    members = {
        "ModelVersion": suggestion.model_version,
        "SuggestedCategory": suggestion.category,
        "Confident": confident,
        "Accepted": int(accepted),
        "Overridden": int(not accepted),
        "Feedback": 1,
    } | ({"Revisions": 1} if outcome == REVISED else {})
    return observe.document(line, [directive], members, environ)


def submit(payload: Any, client: Any = None) -> dict[str, Any]:
    """Validate, look up, store and count one feedback; the answer's body."""
    feedback = parse(payload)
    table = os.environ.get(TABLE_VARIABLE, "")
    if not table:
        raise ServiceError(
            "The feedback store is not configured.", detail=f"{TABLE_VARIABLE} is not set"
        )
    client = client or results.dynamodb_client()
    suggestion = find(feedback, table, os.environ.get(results.TABLE_VARIABLE, ""), client)
    validate(feedback, suggestion)
    outcome = store(feedback, suggestion, table, client)
    if outcome != UNCHANGED:
        observe.emit(metrics_line(feedback, suggestion, outcome))
    return {
        "suggestion_id": feedback.key,
        "outcome": outcome,
        "accepted": feedback.category == suggestion.category,
        "suggested": suggestion.category,
        "category": feedback.category,
        "model_version": suggestion.model_version,
    }


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """POST /feedback through the HTTP API (or a direct invocation with the JSON body)."""
    request_id = getattr(context, "aws_request_id", "") or str(uuid.uuid4())
    source = events.source_of(event)
    try:
        payload = _body(event) if source != events.DIRECT else event
        answer, status = submit(payload), 200
    except Exception as exc:  # noqa: BLE001 - failures become answers here, once
        error = to_service_error(exc)
        answer, status = error.to_payload(request_id), error.status
        observe.emit({"event": "feedback", "status": status, "code": error.code})
    return events.respond(source, status, answer)


def _body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if not isinstance(body, str) or not body:
        raise BadRequestError("Expected a JSON body.", code="empty_body")
    if event.get("isBase64Encoded"):
        import base64
        import binascii

        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError("Expected a JSON body.", code="invalid_json") from exc
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"Expected a JSON body. {exc}", code="invalid_json") from exc
