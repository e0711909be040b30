"""Fuzzing the handler's event parsing: whatever event arrives, the answer is a 2xx or a 4xx.

Hypothesis builds arbitrary JSON values, request payloads that almost follow the API
contract (wrong types, extra keys, hostile URLs, broken base64) and API Gateway
envelopes (v1 and v2, random headers, bodies and ``isBase64Encoded``). Every answer
must be 200 or 4xx in the caller's shape, nothing may escape the handler, and no
request may outlive the invocation's deadline. Nothing leaves the machine: DNS and
connections are faked (every connection is refused). Image decoding has its own
fuzzing in ``tests/test_preprocessing_fuzz.py``.

Examples per test: the Hypothesis profile of ``tests/conftest.py`` (``ci``, 300;
``HYPOTHESIS_PROFILE=long``, 3,000).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambda_function import handler
from lambda_function.fetch import dns as fetch_dns
from tests.lambda_testing import FakeContext, image_bytes

REMAINING_MS = 6_000
JPEG = image_bytes(size=(40, 30))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
urls = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "http://example.com/a.jpg", "https://shop.test/p.png?sig=x", "s3://bucket/key.jpg",
            "http://127.0.0.1/", "http://[::1]:443/", "http://0x7f.1/", "ftp://x/", "file:///etc",
            "http://a@b/", "http://[fe80::1%25eth0]/", "http://example.com:99999/", "http://%/",
            "http://xn--nxasmq6b/", "http://ex\u00e4mple.com/\u00e9", "gopher://x:70/_",
        ]
    ),
    st.builds("http://{}/{}".format, st.text(max_size=20), st.text(max_size=20)),
)  # fmt: skip
base64_texts = st.one_of(
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.just(base64.b64encode(JPEG).decode()),
    st.text(alphabet="ABCxyz019+/=-_ \n", max_size=60),
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({"url": urls | json_values}),
    st.fixed_dictionaries({"urls": st.lists(urls, max_size=10) | json_values}),
    st.fixed_dictionaries({"image": base64_texts | json_values}),
    st.dictionaries(st.sampled_from(["url", "urls", "image", "x"]), urls | json_values, max_size=3),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "image/jpeg",
     "image/png", "application/octet-stream", "application/vnd.api+json", "text/html",
     "multipart/form-data; boundary=x", "", "IMAGE/JPEG"]
)  # fmt: skip
bodies = st.one_of(
    st.none(),
    st.text(max_size=80),
    payloads.map(json.dumps),
    st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()),
    st.just(base64.b64encode(JPEG).decode()),
    json_values,
)
headers = st.one_of(
    st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=3),
    st.builds(lambda ct: {"content-type": ct}, content_types),
    st.builds(lambda ct: {"Content-Type": ct, "X-Forwarded-For": "10.0.0.1"}, content_types),
    json_values,
)


@st.composite
def api_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "requestContext": draw(
            st.just({}) | st.dictionaries(st.text(max_size=5), json_values, max_size=2)
        )
    }
    if draw(st.booleans()):
        event |= {"version": "2.0", "rawPath": "/predict", "routeKey": "POST /predict"}
    else:
        event |= {"httpMethod": draw(st.sampled_from(["POST", "GET", 5])), "resource": "/predict"}
    event["headers"] = draw(headers)
    event["body"] = draw(bodies)
    event["isBase64Encoded"] = draw(st.booleans() | json_values)
    return event


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, function_env, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    """The deployed settings, with DNS faked (names resolve to a public address, literals to
    themselves) and every connection refused, so the fuzzer never leaves the machine."""

    def resolve(host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return ["93.184.216.34"]

    def refuse(*args: Any, **kwargs: Any) -> socket.socket:
        raise ConnectionRefusedError("fuzzing: no network")

    monkeypatch.setattr(fetch_dns, "resolve", resolve)
    monkeypatch.setattr(socket, "create_connection", refuse)
    function_env(MODEL_PATH=tiny_model, FETCH_RETRIES=0, ALLOW_LOOPBACK_FOR_TESTS=None)


def answer(event: Any) -> tuple[int, dict[str, Any]]:
    """(status, payload) of one invocation, checking the deadline was kept."""
    started = time.monotonic()
    response = handler.lambda_handler(event, FakeContext(remaining_ms=REMAINING_MS))
    assert time.monotonic() - started < REMAINING_MS / 1000
    assert isinstance(response, dict)
    if handler.events.source_of(event) == handler.events.DIRECT:
        return response.get("status", 200), response
    assert response["headers"] == {"Content-Type": "application/json"}
    return response["statusCode"], json.loads(response["body"])


def is_2xx_or_4xx(status: int, payload: dict[str, Any]) -> bool:
    if status == 200:
        return "error" not in payload
    return 400 <= status < 500 and isinstance(payload["error"]["code"], str)


@given(event=json_values)
def test_any_json_value_as_a_direct_event_is_answered_2xx_or_4xx(offline, event) -> None:
    assert is_2xx_or_4xx(*answer(event))


@given(event=payloads)
def test_payloads_close_to_the_contract_are_answered_2xx_or_4xx(offline, event) -> None:
    status, payload = answer(event)
    assert is_2xx_or_4xx(status, payload)
    for item in payload.get("results", []):
        assert item.get("status", 200) in range(400, 500) or "category" in item


@given(event=api_events())
def test_api_gateway_envelopes_are_answered_2xx_or_4xx(offline, event) -> None:
    assert is_2xx_or_4xx(*answer(event))
