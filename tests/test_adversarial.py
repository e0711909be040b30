"""The adversarial suite: hostile URLs, servers, images and events, through the handler.

Every case asserts the status it must get. Address cases run a real listener on
127.0.0.2 (the "internal service") with the test-only loopback setting **off**, feed
fake DNS answers by patching ``fetch.dns.resolve``, and assert that no connection ever
reached the listener. Where a case needs a reachable "public" server, 127.0.0.1
stands in for the internet (``is_public`` is widened to that one address); the
rest of 127.0.0.0/8 stays internal. Cases already covered at the fetcher's level live in
``tests/test_lambda_fetch.py``; these add to them.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from lambda_function import handler
from lambda_function.fetch import addresses
from lambda_function.fetch import dns as fetch_dns
from tests import images
from tests.lambda_testing import (
    FakeContext,
    ImageServer,
    b64,
    body_of,
    image_bytes,
    load_event,
    redirect,
    send,
    serving,
)

JPEG = image_bytes(size=(64, 48))
NOISE_JPEG = images.encode(images.noise("RGB"), "JPEG")
INTERNAL = "127.0.0.2"
STAND_IN_INTERNET = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def internal() -> Any:
    """The service that must never be reached: a real listener on 127.0.0.2."""
    with serving({"/a.jpg": send(JPEG), "/latest/meta-data/": send(b"secret")}, INTERNAL) as srv:
        yield srv


@pytest.fixture
def public() -> Any:
    """A stand-in for a public image host (127.0.0.1, see the module doc); routes per test."""
    with serving({"/a.jpg": send(JPEG)}) as server:
        yield server


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Fake DNS: names map to answers (a list per lookup is popped in turn); the rest fail.
    ``dns["lookups"]`` records every name asked for."""
    answers: dict[str, Any] = {"lookups": []}

    def resolve(host: str, port: int) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]  # a literal, as getaddrinfo answers it
        answers["lookups"].append(host)
        answer = answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):  # a sequence of answers: rebinding
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    monkeypatch.setattr(fetch_dns, "resolve", resolve)
    return answers


@pytest.fixture
def strict(monkeypatch, function_env, tiny_model, internal, public) -> Callable[..., None]:  # type: ignore[no-untyped-def]
    """The function as deployed (loopback off), with the test listeners' ports allowed
    and 127.0.0.1 standing in for the internet."""
    real = addresses.is_public
    monkeypatch.setattr(addresses, "is_public", lambda ip: ip == STAND_IN_INTERNET or real(ip))

    def apply(**env: object) -> None:
        ports = f"80,443,{internal.port},{public.port}"
        settings = {"MODEL_PATH": tiny_model, "FETCH_ALLOWED_PORTS": ports, **env}
        function_env(ALLOW_LOOPBACK_FOR_TESTS=0, **settings)

    apply()
    return apply


def invoke(event: Any, remaining_ms: int = 20_000) -> dict[str, Any]:
    return handler.lambda_handler(event, FakeContext(remaining_ms=remaining_ms))


def status_of(answer: dict[str, Any]) -> tuple[int, str]:
    """(status, code) of a direct invocation's answer; (200, category) on success."""
    if "error" in answer:
        return answer["status"], answer["error"]["code"]
    return 200, answer.get("category", "")


def refused_unconnected(url: str, internal: ImageServer, expected: tuple[int, str]) -> None:
    assert status_of(invoke({"url": url})) == expected
    assert internal.connections == 0, "a connection reached the internal listener"


# -- 1. addresses: numeric spellings, IPv6 wrappers, DNS answers ----------------------------


@pytest.mark.parametrize(
    "host",
    [
        "2130706434", "0x7f000002", "0177.0.0.2", "127.2", "127.0.2", "0x7f.0x0.0x0.0x2",
        "017700000002", "0X7F.2", "127.000.000.002", "0x7f.0.2", "127.0.0.2.",
    ],
)  # fmt: skip
def test_numeric_spellings_of_an_internal_ip_are_refused(strict, internal, host: str) -> None:
    refused_unconnected(internal.url("/a.jpg", host), internal, (400, "url_not_allowed"))


@pytest.mark.parametrize(
    "host",
    [
        "[::ffff:127.0.0.2]", "[::ffff:7f00:2]", "[::127.0.0.2]", "[64:ff9b::7f00:2]",
        "[64:ff9b:1::7f00:2]", "[2002:7f00:2::1]", "[2001:0:4136:e378:8000:63bf:80ff:fffd]",
        "[0:0:0:0:0:ffff:127.0.0.2]",
    ],
)  # fmt: skip
def test_ipv6_wrappers_of_an_internal_ipv4_are_unwrapped_and_refused(
    strict, internal, host: str
) -> None:
    refused_unconnected(internal.url("/a.jpg", host), internal, (400, "url_not_allowed"))


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.2"], ["169.254.169.254"], ["100.64.0.1"], ["10.1.2.3"], ["::ffff:127.0.0.2"],
        ["64:ff9b::a9fe:a9fe"], ["224.0.0.1"], ["240.0.0.1"], ["0.0.0.0"], ["198.18.0.1"],
        ["ff02::1"], ["::"], ["fd00:ec2::254"],
    ],
    ids=lambda answer: answer[0],
)  # fmt: skip
def test_names_resolving_to_internal_addresses_are_refused(strict, internal, dns, answer) -> None:
    dns["shop-images.test"] = answer
    url = f"http://shop-images.test:{internal.port}/a.jpg"
    refused_unconnected(url, internal, (400, "url_not_allowed"))


@pytest.mark.parametrize(
    "answer", [["127.0.0.1", "127.0.0.2"], ["127.0.0.2", "127.0.0.1"], ["127.0.0.1", "::1"]]
)
def test_mixed_answers_with_any_internal_address_are_refused(
    strict, internal, public, dns, answer
) -> None:
    dns["mixed.test"] = answer
    refused_unconnected(
        f"http://mixed.test:{internal.port}/a.jpg", internal, (400, "url_not_allowed")
    )
    assert public.connections == 0


def test_refused_and_unresolvable_hosts_get_the_same_answer(strict, internal, dns) -> None:
    dns["inside.test"] = ["10.0.0.7"]
    blocked = invoke({"url": "http://inside.test/a.jpg"})
    missing = invoke({"url": "http://nowhere.test/a.jpg"})
    assert status_of(blocked) == status_of(missing) == (400, "url_not_allowed")
    same = blocked["error"]["message"].replace("inside.test", "nowhere.test")
    assert same == missing["error"]["message"]
    assert "10.0.0.7" not in blocked["error"]["message"]


def test_rebinding_gets_one_lookup_and_the_connection_goes_to_the_checked_address(
    strict, internal, public, dns
) -> None:
    dns["rebind.test"] = [["127.0.0.1"], [INTERNAL]]  # public first, internal on a second look
    assert status_of(invoke({"url": f"http://rebind.test:{public.port}/a.jpg"}))[0] == 200
    assert dns["lookups"] == ["rebind.test"]
    assert (public.connections, internal.connections) == (1, 0)
    assert public.hosts == [f"rebind.test:{public.port}"]


def test_retries_reuse_the_checked_address_and_never_look_up_again(
    strict, internal, public, dns
) -> None:
    answers = iter([send(b"busy", status=503), send(b"busy", status=502)])
    public.routes["/flaky.jpg"] = lambda h: next(answers, send(JPEG))(h)
    dns["rebind.test"] = [["127.0.0.1"], [INTERNAL]]
    assert status_of(invoke({"url": f"http://rebind.test:{public.port}/flaky.jpg"}))[0] == 200
    assert dns["lookups"] == ["rebind.test"]
    assert (public.connections, internal.connections) == (3, 0)


# -- 2. redirects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2:{port}/a.jpg", "http://2130706434:{port}/a.jpg",
        "http://[::ffff:127.0.0.2]:{port}/a.jpg", "http://internal.test:{port}/a.jpg",
        "http://169.254.169.254/latest/meta-data/", "ftp://127.0.0.2/a.jpg",
        "gopher://127.0.0.2:{port}/_GET%20/a.jpg", "data:image/jpeg;base64,/9j/4AAQ",
        "file:///proc/self/environ", "http://user:pw@127.0.0.1:{port}/a.jpg",
        "http://127.0.0.1:22/a.jpg",
    ],
)  # fmt: skip
def test_redirects_to_internal_addresses_or_other_schemes_are_refused(
    strict, internal, public, dns, location: str
) -> None:
    dns["internal.test"] = [INTERNAL]
    public.routes["/r"] = redirect(location.format(port=internal.port))
    refused_unconnected(public.url("/r"), internal, (422, "redirect_not_allowed"))


def test_a_redirect_two_hops_later_to_an_internal_address_is_refused(
    strict, internal, public
) -> None:
    public.routes["/r1"] = redirect("/r2", 301)
    public.routes["/r2"] = redirect(internal.url("/a.jpg"), 307)
    refused_unconnected(public.url("/r1"), internal, (422, "redirect_not_allowed"))


def test_a_redirect_to_a_name_that_rebinds_is_refused_at_its_own_lookup(
    strict, internal, public, dns
) -> None:
    dns["cdn.test"] = [[INTERNAL], ["127.0.0.1"]]
    public.routes["/r"] = redirect(f"http://cdn.test:{internal.port}/a.jpg")
    refused_unconnected(public.url("/r"), internal, (422, "redirect_not_allowed"))
    assert dns["lookups"] == ["cdn.test"]


def test_a_redirect_loop_stops_at_the_limit(strict, public) -> None:
    public.routes["/loop"] = redirect("/loop")
    assert status_of(invoke({"url": public.url("/loop")})) == (422, "too_many_redirects")
    assert public.connections == 4  # the request and three redirects


# -- 3. hostile servers --------------------------------------------------------------------


def _never_answers(handler_: BaseHTTPRequestHandler) -> None:
    time.sleep(3)


def _drip_one_byte_a_second(handler_: BaseHTTPRequestHandler) -> None:
    handler_.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n")
    try:
        for byte in JPEG[:5]:
            handler_.wfile.write(bytes([byte]))
            handler_.wfile.flush()
            time.sleep(1.0)
    except OSError:
        pass


def _close_early(handler_: BaseHTTPRequestHandler) -> None:
    handler_.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(JPEG))
    handler_.wfile.write(JPEG[: len(JPEG) // 2])
    handler_.close_connection = True


def _reset(handler_: BaseHTTPRequestHandler) -> None:
    handler_.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler_.connection.close()


@pytest.mark.parametrize(
    ("route", "fetch_timeout", "expected"),
    [
        (_never_answers, 1.0, (504, "upstream_timeout")),
        (_drip_one_byte_a_second, 1.5, (504, "upstream_timeout")),
        (_close_early, 5, (422, "incomplete_body")),
        (send(NOISE_JPEG + b"\0" * 9, Content_Length=str(len(NOISE_JPEG) // 2)), 5,
         (422, "corrupt_image")),
        (send(b"<html><body>Not found</body></html>", content_type="text/html"), 5,
         (415, "unsupported_image")),
        (send(b""), 5, (422, "empty_response")),
        (send(gzip.compress(b"\0" * 50_000_000)), 5, (415, "unsupported_image")),
        (send(gzip.compress(JPEG), Content_Encoding="gzip"), 5, (422, "content_encoding")),
        (send(JPEG, Content_Encoding="br"), 5, (422, "content_encoding")),
        (send(b"x", status=404), 5, (422, "upstream_status")),
        (send(b"x", status=500), 5, (422, "upstream_status")),
        (send(b"x" * 10, Content_Length="-5"), 5, (415, "unsupported_image")),  # read to EOF
        (_reset, 5, (422, "connect_failed")),
    ],
    ids=[
        "never-answers", "drips-1-byte-per-s", "closes-early", "lies-short-content-length",
        "html", "empty", "gzip-bomb-as-jpeg", "gzip-encoding", "brotli-encoding", "404", "500",
        "negative-content-length", "connection-reset",
    ],
)  # fmt: skip
def test_hostile_servers_get_their_status_within_the_deadline(
    strict, public, route, fetch_timeout, expected
) -> None:
    strict(FETCH_TIMEOUT=fetch_timeout, FETCH_READ_TIMEOUT=fetch_timeout)
    public.routes["/x"] = route
    started = time.monotonic()
    assert status_of(invoke({"url": public.url("/x")})) == expected
    assert time.monotonic() - started < fetch_timeout + 2.0  # retries included


@pytest.mark.parametrize(("status", "attempts"), [(429, 3), (503, 3), (504, 3), (404, 1), (400, 1)])
def test_only_transient_statuses_are_retried(strict, public, status: int, attempts: int) -> None:
    public.routes["/x"] = send(b"x", status=status)
    assert status_of(invoke({"url": public.url("/x")})) == (422, "upstream_status")
    assert public.connections == attempts


@pytest.mark.parametrize(("retry_after", "attempts"), [("1", 2), ("120", 1)])
def test_a_retry_after_is_honoured_when_it_fits_and_ends_the_retries_when_not(
    strict, public, retry_after: str, attempts: int
) -> None:
    strict(FETCH_TIMEOUT=1.5)
    public.routes["/x"] = send(b"slow down", status=429, Retry_After=retry_after)
    assert status_of(invoke({"url": public.url("/x")})) == (422, "upstream_status")
    assert public.connections == attempts


def test_refusals_and_caps_are_never_retried(strict, internal, public) -> None:
    public.routes["/big"] = send(b"x", Content_Length=str(10**9))
    assert status_of(invoke({"url": public.url("/big")}))[0] == 413
    refused_unconnected(internal.url("/a.jpg"), internal, (400, "url_not_allowed"))
    assert public.connections == 1


def test_no_retry_is_started_that_cannot_finish_before_the_deadline(strict, public) -> None:
    strict(FETCH_TIMEOUT=0.2)
    public.routes["/x"] = send(b"busy", status=503)
    assert status_of(invoke({"url": public.url("/x")})) == (422, "upstream_status")
    assert public.connections == 1


def test_a_batch_with_an_internal_url_answers_it_alone_and_never_connects(
    strict, internal, public
) -> None:
    answer = invoke({"urls": [public.url("/a.jpg"), internal.url("/a.jpg")]})
    good, bad = answer["results"]
    assert "category" in good and (bad["status"], bad["error"]["code"]) == (400, "url_not_allowed")
    assert internal.connections == 0


# -- 4. hostile images ---------------------------------------------------------------------


def _gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(images.encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(images.encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _webp_claiming(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _thousands_of_frames(frames: int = 3000) -> bytes:
    first, *rest = [Image.new("P", (4, 4), i % 256) for i in range(frames)]
    return images.encode(first, "GIF", save_all=True, append_images=rest, duration=10)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


NOISE = images.noise("RGB")
PSD = b"8BPS\x00\x01" + b"\0" * 6 + struct.pack(">HIIHH", 3, 10, 10, 8, 3) + b"\0" * 40


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("truncated JPEG", lambda: _truncated(images.encode(NOISE, "JPEG")), 422),
        ("truncated PNG", lambda: _truncated(images.encode(NOISE, "PNG")), 422),
        ("truncated GIF", lambda: _truncated(images.encode(NOISE.quantize(), "GIF")), 422),
        ("truncated WebP", lambda: _truncated(images.encode(NOISE, "WEBP")), 415),  # unidentified
        ("PNG bomb 100000x100000", lambda: images.png_claiming(100_000, 100_000), 413),
        ("GIF bomb 65535x65535", lambda: _gif_claiming(65_535, 65_535), 413),
        ("JPEG bomb 65500x65500", lambda: _jpeg_claiming(65_500, 65_500), 413),
        ("WebP bomb 16384x16384", lambda: _webp_claiming(16_384, 16_384), 413),
        ("1x100000 PNG", lambda: images.encode(Image.new("L", (1, 100_000), 90), "PNG"), 200),
        ("100000x1 PNG", lambda: images.encode(Image.new("L", (100_000, 1), 90), "PNG"), 200),
        ("GIF of 3000 frames", _thousands_of_frames, 200),
        ("L JPEG", lambda: images.encode(images.noise("L"), "JPEG"), 200),
        ("RGBA GIF", lambda: images.encode(images.noise("RGBA"), "GIF"), 200),
        ("PSD", lambda: PSD, 415),
        ("TIFF", lambda: images.encode(NOISE, "TIFF"), 415),
        ("EPS", lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415),
        ("PDF", lambda: b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", 415),
        ("SVG", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415),
        ("ICO", lambda: images.encode(NOISE, "ICO"), 415),
        ("BMP", lambda: images.encode(NOISE, "BMP"), 415),
        ("TGA", lambda: images.encode(NOISE, "TGA"), 415),
        ("PPM", lambda: images.encode(NOISE, "PPM"), 415),
        ("JPEG 2000", lambda: images.encode(NOISE, "JPEG2000"), 415),
        ("HEIC magic", lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, 415),
        ("zip", lambda: b"PK\x03\x04" + b"\0" * 100, 415),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_hostile_images_get_their_status(strict, name: str, make, expected: int) -> None:
    assert status_of(invoke({"image": b64(make())}))[0] == expected


@pytest.mark.parametrize("case", images.cases(), ids=lambda case: case.name)
def test_every_pillow_mode_and_exif_orientation_is_classified(strict, case) -> None:
    assert status_of(invoke({"image": b64(case.data)}))[0] == 200


# -- 5. malformed events --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (None, (400, "bad_request")),
        (42, (400, "bad_request")),
        ([{"url": "http://example.com/a.jpg"}], (400, "bad_request")),
        ({"url": ["http://example.com/a.jpg"]}, (400, "invalid_url")),
        ({"url": "   "}, (400, "invalid_url")),
        ({"urls": "http://example.com/a.jpg"}, (400, "bad_request")),
        ({"urls": [1, 2]}, (400, "invalid_url")),
        ({"image": 5}, (400, "invalid_base64")),
        ({"image": {"data": "AAAA"}}, (400, "invalid_base64")),
        ({"url": "http://example.com/a.jpg", "urls": ["http://example.com/b.jpg"]},
         (400, "bad_request")),
        ({"image": "AAAA", "urls": ["http://example.com/b.jpg"]}, (400, "bad_request")),
        ({"image": "A" * 6_000_000}, (413, "image_too_large")),
        ({"image": "abc"}, (400, "invalid_base64")),
        ({"image": "-_-_"}, (400, "invalid_base64")),
        ({"image": "AAAA====AAAA"}, (400, "invalid_base64")),
        ({"url": "http://" + "a" * 3000 + ".test/"}, (400, "invalid_url")),
        ({"url": "http://exa mple.com/a.jpg"}, (400, "invalid_url")),
        ({"url": "javascript:alert(1)"}, (400, "invalid_url")),
        ({"url": "http://\xa0/a.jpg"}, (400, "invalid_url")),
        ({"url": "s3://not-allowed-bucket/a.jpg"}, (400, "url_not_allowed")),
    ],
)  # fmt: skip
def test_malformed_direct_events_get_their_status(strict, event: Any, expected) -> None:
    assert status_of(invoke(event)) == expected


def test_a_host_that_idna_turns_into_spaces_is_a_400_not_a_500(strict) -> None:
    """Found by fuzzing: IDNA encodes "\\xa0" to a name with a space in it."""
    (item,) = invoke({"urls": ["http://\xa0/"]})["results"]
    assert (item["status"], item["error"]["code"]) == (400, "invalid_url")


def _api(body: Any, content_type: str = "application/json", **fields: Any) -> dict[str, Any]:
    event = load_event("http-api-url.json")
    event["headers"]["content-type"] = content_type
    event["body"] = body
    event["isBase64Encoded"] = False
    event.update(fields)
    return event


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_api("[" * 100_000 + "]" * 100_000), (400, "invalid_json")),
        (_api('["http://example.com/a.jpg"]'), (400, "bad_request")),
        (_api("null"), (400, "bad_request")),
        (_api("not base64 at all", isBase64Encoded=True), (400, "invalid_base64")),
        (_api(b64(b"\xff\xfe{"), isBase64Encoded=True), (400, "invalid_json")),
        (_api('{"url": "x"}', headers=["content-type", "application/json"]), (400, "bad_request")),
        (_api('{"url": "http://x.test/"}', "multipart/form-data; boundary=x"),
         (415, "unsupported_media_type")),
        (_api('{"url": "http://x.test/"}', "image/png"), (415, "unsupported_image")),
        (_api(b64(b"\0" * 4_200_000), "image/jpeg", isBase64Encoded=True),
         (413, "image_too_large")),
        (_api(12345), (400, "bad_request")),
    ],
    ids=[
        "deeply-nested-json", "json-array", "json-null", "invalid-base64-body",
        "base64-of-binary-garbage", "headers-as-list", "multipart", "json-labelled-image",
        "upload-over-the-payload-cap", "body-as-number",
    ],
)  # fmt: skip
def test_malformed_api_gateway_events_get_their_status(strict, event, expected) -> None:
    response = invoke(event)
    assert response["statusCode"] == expected[0]
    assert body_of(response)["error"]["code"] == expected[1]


def test_the_upload_cap_keeps_base64_under_lambdas_6_mb_payload(strict) -> None:
    from lambda_function.config import MAX_UPLOAD_LIMIT, Config

    config = Config.from_env({})
    assert len(b64(b"\0" * config.upload_cap)) < 6_000_000
    assert len(b64(b"\0" * MAX_UPLOAD_LIMIT)) <= 6_000_000
    with pytest.raises(ValueError, match="MAX_UPLOAD_BYTES"):
        Config.from_env({"MAX_UPLOAD_BYTES": str(MAX_UPLOAD_LIMIT + 1)})


def test_nothing_lingers_after_a_hostile_run(strict, public) -> None:
    """Watchdogs and fetch threads end with their request (resolver threads may not)."""
    before = threading.active_count()
    public.routes["/x"] = _close_early
    for _ in range(5):
        invoke({"url": public.url("/x")})
    time.sleep(0.2)
    assert threading.active_count() <= before + 1  # the server's own handler thread
