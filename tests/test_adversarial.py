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
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lambda_function import handler
from lambda_function.fetch import addresses
from lambda_function.fetch import dns as fetch_dns
from tests import hostile, images
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


# -- 6. round 2 (issue 12): decoding, memory, 500s, shared state, sizes, 1xx, tables, leaks --


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes of every image whose pixels were decoded (``ImageFile.load`` calls)."""
    from PIL import ImageFile

    seen: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        seen.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: hostile.jpeg_with_scans(7000, 5000, 10_000), (413, "image_too_large")),
        (lambda: hostile.jpeg_with_scans(7000, 5000, 65), (413, "image_too_large")),
        (lambda: hostile.jpeg_with_scans(2000, 2000, 3), (422, "corrupt_image")),
        (lambda: hostile.jpeg_with_scans(7000, 5700, 40) + b"\0" * 60_000,
         (413, "image_too_large")),
    ],
    ids=["10000-empty-scans", "65-scans", "4MP-in-400-bytes", "work-over-budget"],
)  # fmt: skip
def test_jpegs_asking_too_much_of_the_decoder_are_refused_before_decoding(
    strict, decodes, make, expected
) -> None:
    assert status_of(invoke({"image": b64(make())})) == expected
    assert decodes == []


def test_the_scan_limit_and_work_budget_let_real_progressive_jpegs_through(strict) -> None:
    from lambda_function import decode_limits

    data = images.encode(NOISE, "JPEG", progressive=True)
    assert decode_limits.jpeg_scans(data) == 10  # libjpeg's script for colour
    assert decode_limits.jpeg_scans(hostile.jpeg_with_scans(64, 64, 58)) == 64
    assert status_of(invoke({"image": b64(hostile.jpeg_with_scans(64, 64, 58))}))[0] == 200
    assert decode_limits.decode_work(40_000_000, 3, 11) == decode_limits.MAX_DECODE_WORK
    assert decode_limits.decode_work(40_000_000, 3, 12) > decode_limits.MAX_DECODE_WORK


@pytest.fixture(scope="module")
def forty_mp_progressive() -> bytes:
    return hostile.flat_jpeg((7300, 5470), progressive=True)


def test_a_decode_that_cannot_end_in_the_time_left_is_a_504_and_never_starts(
    strict, decodes, forty_mp_progressive
) -> None:
    # 3.1 s left: the fetch budget is 0.1 s, the decode must end 1.5 s later; 40 MP in 10
    # progressive scans is estimated at ~2.6 s, so it is answered 504 at once.
    answer = invoke({"image": b64(forty_mp_progressive)}, remaining_ms=3_100)
    assert status_of(answer) == (504, "upstream_timeout")
    assert decodes == []


def test_the_same_decode_with_time_left_is_classified(strict, forty_mp_progressive) -> None:
    assert status_of(invoke({"image": b64(forty_mp_progressive)}))[0] == 200


def test_the_decode_estimate_follows_lambdas_cpu_share() -> None:
    from lambda_function import decode_limits as limits

    full = limits.estimated_seconds(10**9, memory_mb=limits.LAMBDA_MB_PER_VCPU)
    assert full == pytest.approx(10**9 * limits.NS_PER_WORK_UNIT * 1e-9)
    assert limits.estimated_seconds(10**9, memory_mb=1024) == pytest.approx(full * 1769 / 1024)
    assert limits.estimated_seconds(10**9, memory_mb=10240) == full  # one decode, one core


@pytest.mark.parametrize(
    ("memory_mb", "slots"), [(None, 4), (1024, 1), (1792, 3), (3008, 6), (10240, 25)]
)
def test_concurrent_decodes_follow_the_functions_memory(memory_mb, slots: int) -> None:
    from lambda_function.decode_limits import decode_slots

    assert decode_slots(memory_mb, 40_000_000) == slots
    assert decode_slots(memory_mb, 4_000_000) >= slots


def test_a_decode_waiting_for_a_slot_past_its_deadline_is_a_504() -> None:
    from lambda_function.decode_limits import DecodeGate
    from lambda_function.image_errors import OutOfTimeError

    gate = DecodeGate(1)
    with gate.slot(None), pytest.raises(OutOfTimeError):  # noqa: SIM117 - nested on purpose
        with gate.slot(time.monotonic() + 0.05):
            pass
    with gate.slot(time.monotonic() + 0.05):  # released: free again
        pass


def test_sixteen_bit_images_are_scaled_without_wide_intermediates() -> None:
    """The 16-bit path once made int64 copies of every pixel (0.9 GB at 40 MP)."""
    import tracemalloc

    import numpy as np

    from lambda_function import preprocessing

    values = np.random.default_rng(0).integers(0, 65536, (1500, 2000), dtype=np.uint16)
    data = images.encode(Image.fromarray(values), "PNG", compress_level=1)
    tracemalloc.start()
    x = preprocessing.preprocess(data, 32)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < values.size  # not even one byte per pixel goes through numpy
    reference = images.sixteen_to_eight(Image.fromarray(values)).convert("RGB")
    expected = preprocessing.scale(np.asarray(reference.resize((32, 32), Image.NEAREST)))
    np.testing.assert_array_equal(x[0], expected)


def test_no_full_size_image_is_converted_on_the_serving_path(monkeypatch) -> None:
    from lambda_function import preprocessing

    cases = images.cases()
    converted: list[tuple[int, int]] = []
    real = Image.Image.convert

    def convert(self: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        converted.append(self.size)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)
    for case in cases:
        preprocessing.preprocess(case.data, 32)
    assert converted and set(converted) == {(32, 32)}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_api('{"url": ' + "9" * 5_000 + "}"), (400, "invalid_json")),
        (_api('{"url": "http://example.com/\\ud800.jpg"}'), (400, "invalid_url")),
        (_api('{"urls": ["http://\\udfff.test/"]}'), (200, "invalid_url")),
        (_api('{"url": "s3://[bucket/key.jpg"}'), (400, "invalid_url")),
        (_api('{"url": "s3://bucket]/key.jpg"}'), (400, "invalid_url")),
    ],
    ids=["int-of-5000-digits", "lone-surrogate", "lone-surrogate-in-batch", "s3-unbalanced",
         "s3-bracket"],
)  # fmt: skip
def test_events_that_once_were_500s_are_4xx(strict, event, expected) -> None:
    response = invoke(event)
    body = body_of(response)
    if expected[0] == 200:  # a batch: the item carries the status
        (item,) = body["results"]
        assert (item["status"], item["error"]["code"]) == (400, expected[1])
    else:
        assert (response["statusCode"], body["error"]["code"]) == expected


def test_a_lone_surrogate_in_a_url_is_named_in_the_answer(strict) -> None:
    body = body_of(invoke(_api('{"url": "http://example.com/\\ud800.jpg"}')))
    assert body["error"]["message"].startswith("Expected a URL of Unicode text.")


@pytest.mark.parametrize("location", ["http://[::1/a.jpg", "http://[v1.x]:80/", "//[/a"])
def test_a_redirect_to_a_malformed_url_is_a_422(strict, public, location: str) -> None:
    public.routes["/r"] = redirect(location)
    assert status_of(invoke({"url": public.url("/r")})) == (422, "redirect_not_allowed")


PNG_CRASHES = {
    "icc-after-idat": lambda: hostile.png(8, 8, after=[(b"iCCP", b"p\0")]),
    "oversized-trns": lambda: hostile.png(
        8, 8, color_type=3, before=[(b"PLTE", hostile.palette(4)), (b"tRNS", b"\0" * 300)]
    ),
    "trns-past-256-entries": lambda: hostile.png(
        8, 8, color_type=3, before=[(b"PLTE", hostile.palette(256)), (b"tRNS", b"\0" * 257)]
    ),
}


@pytest.mark.parametrize("name", sorted(PNG_CRASHES))
def test_pngs_that_make_pillow_raise_odd_errors_are_422(strict, name: str) -> None:
    assert status_of(invoke({"image": b64(PNG_CRASHES[name]())})) == (422, "corrupt_image")


def test_a_batch_of_names_that_never_resolve_cannot_deny_the_next_request(
    strict, public, dns, monkeypatch
) -> None:
    from lambda_function.fetch import dns as fetch_dns

    release = threading.Event()
    hung: list[str] = []
    answer_fake = fetch_dns.resolve

    def resolve(host: str, port: int) -> list[str]:
        if host.startswith("hang-"):
            hung.append(host)
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "timed out")
        return answer_fake(host, port)

    monkeypatch.setattr(fetch_dns, "resolve", resolve)
    dns["shop.test"] = ["127.0.0.1"]
    strict(FETCH_TIMEOUT=1)
    try:
        batch = invoke({"urls": [f"http://hang-{i}.test/a.jpg" for i in range(8)]})
        assert {item["status"] for item in batch["results"]} == {504}
        assert len(hung) == fetch_dns.LOOKUPS_PER_REQUEST  # the rest waited their turn
        assert "Resolving 'hang-0.test' took longer than" in str(batch["results"][0])
        answer = invoke({"url": f"http://shop.test:{public.port}/a.jpg"})
        assert status_of(answer)[0] == 200
    finally:
        release.set()


def test_a_temporary_dns_failure_is_a_retryable_504_unlike_a_missing_name(
    strict, dns, monkeypatch
) -> None:
    from lambda_function.fetch import dns as fetch_dns

    def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(fetch_dns, "resolve", resolve)
    assert status_of(invoke({"url": "http://flaky-dns.test/a.jpg"})) == (504, "upstream_timeout")
    monkeypatch.undo()
    strict()
    missing = invoke({"url": "http://nowhere.test/a.jpg"})
    assert status_of(missing) == (400, "url_not_allowed")


@pytest.mark.parametrize("keys", [30, 100_000])
def test_error_messages_stay_bounded_whatever_the_body(strict, keys: int) -> None:
    body = "{" + ", ".join(f'"k{i}\\u00e9\\n": {i}' for i in range(keys)) + "}"
    response = invoke(_api(body))
    assert response["statusCode"] == 400
    message = body_of(response)["error"]["message"]
    assert len(message) <= 1024 and len(response["body"]) < 2048
    assert f"{keys - 5:,} more" in message


def test_no_service_error_message_exceeds_the_bound() -> None:
    from lambda_function.errors import MAX_MESSAGE_CHARS, BadRequestError

    assert len(BadRequestError("x" * MAX_MESSAGE_CHARS).message) == MAX_MESSAGE_CHARS
    long = BadRequestError("x" * (MAX_MESSAGE_CHARS + 1)).message
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("more characters)")


@pytest.mark.parametrize(("interim", "status"), [(1, 103), (3, 103), (1, 100), (2, 102)])
def test_interim_responses_before_the_image_are_skipped(
    strict, public, interim: int, status: int
) -> None:
    final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(JPEG) + JPEG
    public.routes["/x"] = lambda h: h.wfile.write(hostile.interim_then(final, interim, status))
    assert status_of(invoke({"url": public.url("/x")}))[0] == 200


def test_endless_interim_responses_are_a_bad_response(strict, public) -> None:
    final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(JPEG) + JPEG
    public.routes["/x"] = lambda h: h.wfile.write(hostile.interim_then(final, 9))
    assert status_of(invoke({"url": public.url("/x")})) == (422, "bad_response")


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1", "fec0:ffff::1", "192.0.0.8", "192.0.0.9", "192.0.0.10", "192.0.0.170",
        "192.0.0.200", "192.31.196.1", "192.52.193.1", "192.88.99.1", "192.175.48.1",
        "2001:1::1", "2001:2::1", "2001:db8::1", "3fff::1", "2620:4f:8000::1", "100::1",
        "5f00::1", "::2", "4000::1", "::ffff:192.0.0.8", "2002:c000:0008::1",
    ],
)  # fmt: skip
def test_special_purpose_ranges_are_refused_on_every_python(address: str) -> None:
    assert not addresses.is_public(ipaddress.ip_address(address))


def test_the_address_rules_do_not_ask_ipaddress_what_is_global(monkeypatch) -> None:
    def asked(self: object) -> bool:
        raise AssertionError("is_global/is_private consulted")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in ("is_global", "is_private", "is_reserved", "is_multicast"):
            monkeypatch.setattr(cls, name, property(asked))
    assert addresses.is_public(ipaddress.ip_address("8.8.8.8"))
    assert not addresses.is_public(ipaddress.ip_address("10.0.0.1"))
    assert addresses.is_public(ipaddress.ip_address("2606:4700::1111"))


def test_every_installed_python_gives_the_same_answers() -> None:
    """The table is pure ``ipaddress`` membership: load it alone under 3.11, 3.12 and 3.13."""
    import shutil
    import subprocess
    import sys

    module = Path(addresses.__file__)
    probe = [
        "0.0.0.1", "8.8.8.8", "192.0.0.8", "192.0.0.200", "100.64.1.1", "fec0::1", "fe80::1",
        "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::a9fe:a9fe", "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe", "fd00::1", "ff02::1", "::", "2001:4860::8888",
    ]  # fmt: skip
    script = (
        "import importlib.util, ipaddress, sys\n"
        f"spec = importlib.util.spec_from_file_location('addresses', {str(module)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print([m.is_public(ipaddress.ip_address(a)) for a in sys.argv[1:]])\n"
    )
    candidates = [shutil.which(name) for name in ("python3.11", "python3.12", "python3.13")]
    candidates += [str(path) for path in Path.home().glob(".pyenv/versions/3.1[123]*/bin/python")]
    interpreters = {sys.executable} | {
        path
        for path in candidates
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0
    }
    answers = {
        python: subprocess.run(
            [python, "-c", script, *probe], capture_output=True, text=True, check=True
        ).stdout
        for python in interpreters
    }
    assert len(set(answers.values())) == 1, answers
    assert len(answers) >= 2 or sys.version_info[:2] == (3, 12)


def test_s3_errors_answer_without_buckets_sizes_or_s3_codes(strict, monkeypatch, caplog) -> None:
    from botocore.exceptions import ClientError

    from lambda_function.fetch import s3

    class Denied:
        def head_object(self, **kwargs: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "AccessDenied"}}, "HeadObject")

    class Huge:
        def head_object(self, **kwargs: Any) -> dict[str, Any]:
            return {"ContentLength": 987_654_321}

    strict(S3_ALLOWED_BUCKETS="secret-bucket-name")
    for client, expected in [(Denied(), (422, "s3_error")), (Huge(), (413, "image_too_large"))]:
        monkeypatch.setattr(s3, "s3_client", lambda *args, c=client: c)
        answer = invoke({"url": "s3://secret-bucket-name/private/key.jpg"})
        assert status_of(answer) == expected
        message = answer["error"]["message"]
        for secret in ("secret-bucket-name", "AccessDenied", "987", "private/key"):
            assert secret not in message
    assert "AccessDenied" in caplog.text and "987,654,321" in caplog.text


def test_library_messages_stay_in_the_log(strict, public, caplog) -> None:
    public.routes["/bad"] = lambda h: h.wfile.write(b"HTTP/1.1 2OO OK\r\n\r\n")
    public.routes["/pix"] = send(_truncated(images.encode(NOISE, "PNG")), content_type="image/png")
    bad = invoke({"url": public.url("/bad")})
    assert status_of(bad) == (422, "bad_response")
    assert "BadStatusLine" not in bad["error"]["message"] and "BadStatusLine" in caplog.text
    corrupt = invoke({"url": public.url("/pix")})
    assert status_of(corrupt) == (422, "corrupt_image")
    assert corrupt["error"]["message"].endswith("failed.")


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/jpeg", 200), ("image/png", 200), ("image/webp", 200), ("IMAGE/JPEG", 200),
        ("image/jpeg; charset=binary", 200), ("application/octet-stream", 200),
        ("application/json", 400), ("text/plain", 400), ("application/vnd.shop+json", 400),
        ("multipart/form-data", 415), ("application/xml", 415), ("text/html", 415),
    ],
)  # fmt: skip
def test_uploads_are_taken_by_content_type(strict, content_type: str, expected: int) -> None:
    """Raw bytes for image/* and octet-stream; JSON for JSON-ish types; 415 for the rest."""
    event = _api(b64(JPEG), content_type, isBase64Encoded=True)
    assert invoke(event)["statusCode"] == expected


@pytest.mark.parametrize(("urls", "expected"), [(8, 200), (9, 400), (0, 400)])
def test_the_batch_limit_admits_exactly_max_batch(strict, dns, urls: int, expected: int) -> None:
    answer = invoke({"urls": [f"http://n{i}.test/a.jpg" for i in range(urls)]})
    assert (answer.get("status", 200), len(answer.get("results", []))) == (
        expected,
        urls if expected == 200 else 0,
    )


def test_an_unforeseen_error_is_logged_with_its_traceback(strict, monkeypatch, caplog) -> None:
    from lambda_function.model import Classifier

    def broken(self: Classifier, batch: Any) -> Any:
        raise RuntimeError("secret internals")

    invoke({"image": b64(JPEG)})  # the service is built
    monkeypatch.setattr(Classifier, "predict", broken)
    assert status_of(invoke({"image": b64(JPEG)})) == (500, "internal_error")
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is RuntimeError and "secret internals" in caplog.text
