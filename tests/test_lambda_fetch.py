"""The fetcher: only public addresses, checked at every hop; bounded in bytes and time."""

from __future__ import annotations

import gzip
import io
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from lambda_function.errors import ServiceError
from lambda_function.fetch import FetchPolicy, dns, fetch, s3
from lambda_function.fetch.addresses import is_public
from tests.lambda_testing import image_bytes, redirect, send, serving

JPEG = image_bytes()


def policy(**overrides: object) -> FetchPolicy:
    settings: dict[str, object] = {"max_bytes": 100_000, "allow_loopback": True}
    settings.update(overrides)
    return FetchPolicy(**settings)  # type: ignore[arg-type]


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def refused(url: str, fetch_policy: FetchPolicy, deadline: float | None = None) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        fetch(url, fetch_policy, deadline or soon())
    return caught.value


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.9.9.9", "0.0.0.0", "10.0.0.1", "172.16.5.4", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "198.18.0.1", "224.0.0.1", "255.255.255.255",
        "240.0.0.1", "::1", "::", "fe80::1", "fd00::1", "fd00:ec2::254", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::",
        "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::a00:1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused_including_ipv4_inside_ipv6(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://example.com/",
        "http:///nohost.jpg",
        "http://user:pass@example.com/a.jpg",
        "http://example.com@8.8.8.8/a.jpg",
        "http://example.com/a b.jpg",
        "http://example.com/a\r\nX-Injected: 1",
        "not a url",
        "http://[::1/",
        "http://[fe80::1%25lo]/a.jpg",
    ],
)
def test_malformed_or_unsupported_urls_are_bad_requests(url: str) -> None:
    error = refused(url, policy(allow_loopback=False))
    assert (error.status, error.code) == (400, "invalid_url")


def test_ports_other_than_80_and_443_are_refused_before_any_lookup() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("looked up")

    error = refused("http://8.8.8.8:8080/a.jpg", policy(allow_loopback=False, resolver=resolver))
    assert (error.status, error.code) == (400, "url_not_allowed")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "localhost", "2130706433", "0x7f000001", "0177.0.0.1", "127.1",
        "0x7f.1", "0.0.0.0", "0", "127.000.000.001", "LOCALHOST", "[::1]", "[::]",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:7f00:1]",
    ],
)  # fmt: skip
def test_loopback_in_any_spelling_is_refused_and_never_connected(host: str) -> None:
    with serving({"/a.jpg": send(JPEG)}) as server:
        port = server.server_address[1]
        strict = policy(allow_loopback=False, allowed_ports=(port,))
        error = refused(f"http://{host}:{port}/a.jpg", strict)
        assert (error.status, error.code) == (400, "url_not_allowed")
        assert server.connections == 0


def test_the_test_only_setting_lets_loopback_through() -> None:
    with serving({"/a.jpg": send(JPEG)}) as server:
        assert fetch(server.url("/a.jpg"), policy(), soon()) == JPEG


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    error = refused("http://rebind.test/a.jpg", policy(resolver=lambda h, p: ["10.1.2.3"]))
    assert (error.status, error.code) == (400, "url_not_allowed")


def test_a_name_with_any_private_address_among_public_ones_is_refused() -> None:
    resolver = lambda h, p: ["8.8.8.8", "169.254.169.254"]  # noqa: E731
    error = refused("http://mixed.test/a.jpg", policy(resolver=resolver))
    assert error.code == "url_not_allowed"


def test_the_checked_address_is_connected_with_the_name_kept_for_host(monkeypatch) -> None:
    """One lookup, then a connection to that very address: DNS rebinding has no second try."""
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with serving({"/a.jpg": send(JPEG)}) as server:
        port = server.server_address[1]
        data = fetch(f"http://images.test:{port}/a.jpg", policy(resolver=resolver), soon())
    assert data == JPEG
    assert calls == ["images.test"]
    assert "images.test" not in looked_up
    assert server.hosts == [f"images.test:{port}"]


def test_redirects_are_followed_up_to_the_limit() -> None:
    routes = {"/a.jpg": send(JPEG), "/r1": redirect("/a.jpg"), "/r2": redirect("/r1")}
    routes |= {"/r3": redirect("/r2", 301), "/r4": redirect("/r3", 307)}
    with serving(routes) as server:
        assert fetch(server.url("/r3"), policy(), soon()) == JPEG
        error = refused(server.url("/r4"), policy())
    assert (error.status, error.code) == (422, "too_many_redirects")


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.jpg",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "file:///etc/passwd",
        "http://user@example.com/",
    ],
)
def test_a_redirect_to_a_refused_location_is_refused_at_that_hop(location: str) -> None:
    with serving({"/r": redirect(location)}) as server:
        error = refused(server.url("/r"), policy())
        assert server.connections == 1
    assert (error.status, error.code) == (422, "redirect_not_allowed")


def test_a_redirect_to_a_name_that_resolves_privately_is_refused() -> None:
    resolver = lambda h, p: ["127.0.0.1"] if h == "127.0.0.1" else ["192.168.0.7"]  # noqa: E731
    with serving({"/r": redirect("http://intranet.test/a.jpg")}) as server:
        error = refused(server.url("/r"), policy(resolver=resolver))
    assert error.code == "redirect_not_allowed"


def test_upstream_errors_are_unprocessable() -> None:
    with serving({}) as server:
        error = refused(server.url("/missing.jpg"), policy())
    assert (error.status, error.code) == (422, "upstream_status")


def test_a_closed_port_is_unprocessable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = refused(f"http://127.0.0.1:{port}/a.jpg", policy())
    assert (error.status, error.code) == (422, "connect_failed")


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with serving({"/big": send(b"x" * 10, Content_Length=str(10**9))}) as server:
        error = refused(server.url("/big"), policy())
    assert (error.status, error.code) == (413, "image_too_large")


def test_a_body_over_the_cap_without_length_is_cut_off_while_streaming() -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b"\xff" * 65536)

    with serving({"/stream": endless}) as server:
        error = refused(server.url("/stream"), policy(max_bytes=200_000))
    assert (error.status, error.code) == (413, "image_too_large")


def _chunked(body: bytes, size: int = 1000):  # type: ignore[no-untyped-def]
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for start in range(0, len(body), size):
            chunk = body[start : start + size]
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    return route


def test_chunked_bodies_are_read_and_capped() -> None:
    with serving({"/ok": _chunked(JPEG), "/big": _chunked(b"x" * 300_000, 50_000)}) as server:
        assert fetch(server.url("/ok"), policy(), soon()) == JPEG
        error = refused(server.url("/big"), policy(max_bytes=200_000))
    assert error.code == "image_too_large"


def test_a_body_shorter_than_its_declared_length_is_unprocessable() -> None:
    with serving({"/short": send(JPEG[:100], Content_Length=str(len(JPEG)))}) as server:
        error = refused(server.url("/short"), policy())
    assert (error.status, error.code) == (422, "incomplete_body")


def test_conflicting_content_lengths_are_unprocessable() -> None:
    def twice(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(JPEG)))
        handler.send_header("Content-Length", "5")
        handler.end_headers()
        handler.wfile.write(JPEG)

    with serving({"/twice": twice}) as server:
        error = refused(server.url("/twice"), policy())
    assert error.status == 422


def test_identity_is_asked_for_and_a_compressed_body_is_never_inflated() -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 MB of zeros in ~20 KB
    seen: list[str] = []

    def gzipped(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Accept-Encoding", ""))
        send(bomb, Content_Encoding="gzip")(handler)

    with serving({"/bomb": gzipped}) as server:
        error = refused(server.url("/bomb"), policy())
    assert seen == ["identity"]
    assert (error.status, error.code) == (422, "content_encoding")


def _drip(headers_first: bool):  # type: ignore[no-untyped-def]
    def route(handler: BaseHTTPRequestHandler) -> None:
        stream = handler.wfile
        head = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n"
        if headers_first:
            stream.write(head)
            stream.flush()
        payload = b"x" * 100 if headers_first else head
        try:
            for byte in payload:
                stream.write(bytes([byte]))
                stream.flush()
                time.sleep(0.1)
        except OSError:
            pass

    return route


@pytest.mark.parametrize("headers_first", [True, False], ids=["slow-body", "slow-headers"])
def test_a_dripping_server_is_cut_off_at_the_deadline(headers_first: bool) -> None:
    with serving({"/drip": _drip(headers_first)}) as server:
        started = time.monotonic()
        error = refused(server.url("/drip"), policy(), time.monotonic() + 1.0)
        elapsed = time.monotonic() - started
    assert (error.status, error.code) == (504, "upstream_timeout")
    assert elapsed < 2.0


def test_a_silent_server_times_out_on_the_read_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        error = refused(f"http://127.0.0.1:{port}/a.jpg", policy(read_timeout_s=0.5))
        assert time.monotonic() - started < 2.0
    assert (error.status, error.code) == (504, "upstream_timeout")


def test_no_time_left_means_no_connection() -> None:
    with serving({"/a.jpg": send(JPEG)}) as server:
        error = refused(server.url("/a.jpg"), policy(), time.monotonic() - 1)
        assert server.connections == 0
    assert error.status == 504


def test_proxy_environment_variables_are_ignored(monkeypatch) -> None:
    with serving({}) as proxy, serving({"/a.jpg": send(JPEG)}) as server:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url(""))
        assert fetch(server.url("/a.jpg"), policy(), soon()) == JPEG
        assert proxy.connections == 0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``images.test`` (the openssl command line makes it)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    cert, key = tls_files
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)
    with serving({"/a.jpg": send(JPEG), "/drip": _drip(headers_first=True)}) as server:
        server.socket = server_context.wrap_socket(server.socket, server_side=True)
        server.sni_names = names  # type: ignore[attr-defined]
        yield server


def test_https_connects_to_the_checked_address_and_verifies_the_name(tls_server, tls_files):  # type: ignore[no-untyped-def]
    trusting = ssl.create_default_context(cafile=str(tls_files[0]))
    port = tls_server.server_address[1]
    tls = policy(resolver=lambda h, p: ["127.0.0.1"], ssl_context=trusting)
    assert fetch(f"https://images.test:{port}/a.jpg", tls, soon()) == JPEG
    assert tls_server.sni_names == ["images.test"]


def test_https_with_an_untrusted_or_mismatched_certificate_is_refused(tls_server, tls_files):  # type: ignore[no-untyped-def]
    port = tls_server.server_address[1]
    untrusted = policy(resolver=lambda h, p: ["127.0.0.1"])
    assert refused(f"https://images.test:{port}/a.jpg", untrusted).code == "tls_failed"
    trusting = ssl.create_default_context(cafile=str(tls_files[0]))
    mismatched = policy(ssl_context=trusting)
    assert refused(f"https://127.0.0.1:{port}/a.jpg", mismatched).code == "tls_failed"


def test_a_dripping_tls_server_is_cut_off_at_the_deadline(tls_server, tls_files):  # type: ignore[no-untyped-def]
    trusting = ssl.create_default_context(cafile=str(tls_files[0]))
    tls = policy(resolver=lambda h, p: ["127.0.0.1"], ssl_context=trusting)
    url = f"https://images.test:{tls_server.server_address[1]}/drip"
    started = time.monotonic()
    error = refused(url, tls, time.monotonic() + 1.0)
    assert time.monotonic() - started < 2.0
    assert error.code == "upstream_timeout"


@pytest.fixture
def stubbed_s3(monkeypatch):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    monkeypatch.setattr(s3, "s3_client", lambda *args: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _s3_object(data: bytes, length: int | None = None) -> dict[str, object]:
    from botocore.response import StreamingBody

    return {
        "Body": StreamingBody(io.BytesIO(data), len(data)),
        "ContentLength": length or len(data),
    }


def _s3_head(length: int) -> dict[str, object]:
    return {"ContentLength": length}


S3 = {"s3_buckets": ("shop",)}


def test_s3_urls_are_read_with_the_functions_credentials(stubbed_s3) -> None:  # type: ignore[no-untyped-def]
    where = {"Bucket": "shop", "Key": "a b.jpg"}
    stubbed_s3.add_response("head_object", _s3_head(len(JPEG)), where)
    stubbed_s3.add_response("get_object", _s3_object(JPEG), where)
    assert fetch("s3://shop/a%20b.jpg", policy(**S3), soon()) == JPEG


def test_s3_objects_over_the_cap_are_refused_after_head_without_download(stubbed_s3) -> None:  # type: ignore[no-untyped-def]
    stubbed_s3.add_response("head_object", _s3_head(10**9), {"Bucket": "shop", "Key": "k"})
    assert refused("s3://shop/k", policy(**S3)).status == 413  # no get_object was stubbed


def test_s3_objects_that_grow_past_the_cap_after_head_are_cut_off(stubbed_s3) -> None:  # type: ignore[no-untyped-def]
    stubbed_s3.add_response("head_object", _s3_head(10), {"Bucket": "shop", "Key": "k"})
    big = b"x" * 200_000
    stubbed_s3.add_response("get_object", _s3_object(big), {"Bucket": "shop", "Key": "k"})
    assert refused("s3://shop/k", policy(**S3)).status == 413


def test_missing_s3_objects_are_unprocessable(stubbed_s3) -> None:  # type: ignore[no-untyped-def]
    stubbed_s3.add_client_error("head_object", "404", http_status_code=404)
    error = refused("s3://shop/missing.jpg", policy(**S3))
    assert (error.status, error.code) == (422, "s3_error")


def test_s3_buckets_off_the_allow_list_are_refused_without_a_call(stubbed_s3) -> None:  # type: ignore[no-untyped-def]
    for allowed in [(), ("other",)]:
        error = refused("s3://shop/a.jpg", policy(s3_buckets=allowed))
        assert (error.status, error.code) == (400, "url_not_allowed")


def test_s3_client_timeouts_never_exceed_the_time_left(monkeypatch) -> None:
    made: list[tuple[float, float, int]] = []

    class Client:
        def head_object(self, **kwargs: object) -> dict[str, object]:
            raise AssertionError("stop here")

    def client(connect: float, read: float, attempts: int = 2) -> Client:
        made.append((connect, read, attempts))
        return Client()

    monkeypatch.setattr(s3, "s3_client", client)
    with pytest.raises(AssertionError):
        fetch("s3://shop/k", policy(**S3), soon(1.5))
    with pytest.raises(AssertionError):
        fetch("s3://shop/k", policy(**S3), soon(60))
    assert made == [(2, 2, 1), (3.0, 5.0, 2)]


def test_s3_urls_need_a_bucket_and_a_key() -> None:
    assert refused("s3://shop/", policy()).code == "invalid_url"


def test_the_resolver_gives_up_at_the_deadline() -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["8.8.8.8"]

    try:
        error = refused("http://slow-dns.test/a.jpg", policy(resolver=hanging), soon(0.3))
    finally:
        release.set()
    assert error.status == 504


def test_non_ascii_paths_are_percent_encoded() -> None:
    with serving({"/%C3%A9t%C3%A9.jpg?q=%C3%A9": send(JPEG)}) as server:
        assert fetch(server.url("/été.jpg?q=é"), policy(), soon()) == JPEG


def test_an_empty_body_is_unprocessable() -> None:
    with serving({"/empty": send(b"")}) as server:
        error = refused(server.url("/empty"), policy())
    assert (error.status, error.code) == (422, "empty_response")


def test_a_compressed_transfer_encoding_is_refused() -> None:
    with serving({"/te": send(gzip.compress(JPEG), Transfer_Encoding="gzip")}) as server:
        error = refused(server.url("/te"), policy())
    assert (error.status, error.code) == (422, "content_encoding")


def test_the_next_checked_address_is_tried_when_one_does_not_answer() -> None:
    with serving({"/a.jpg": send(JPEG)}) as server:
        port = server.server_address[1]
        both = policy(resolver=lambda h, p: ["127.0.0.2", "127.0.0.1"])
        assert fetch(f"http://images.test:{port}/a.jpg", both, soon()) == JPEG


def test_lookups_left_hanging_are_bounded_and_their_threads_end_when_dns_answers() -> None:
    release = threading.Event()
    started: list[str] = []

    def hanging(host: str, port: int) -> list[str]:
        started.append(host)
        release.wait(10)
        return ["8.8.8.8"]

    slow_dns = policy(resolver=hanging)
    try:
        for i in range(dns.MAX_PENDING_LOOKUPS):
            assert refused(f"http://slow-{i}.test/", slow_dns, soon(0.05)).status == 504
        error = refused("http://one-more.test/", slow_dns, soon(5))
        assert error.status == 504 and "have not returned" in error.message
        assert "one-more.test" not in started
    finally:
        release.set()
    fast_dns = policy(resolver=lambda h, p: ["10.0.0.1"])
    deadline = time.monotonic() + 5
    while refused("http://after.test/", fast_dns).status == 504:  # threads ending
        assert time.monotonic() < deadline, "the hung lookups' slots were never freed"
        time.sleep(0.01)
    assert refused("http://after.test/", fast_dns).status == 400


def test_a_url_of_exactly_the_length_limit_is_looked_up_and_one_more_is_not() -> None:
    from lambda_function.fetch.url import MAX_URL_LENGTH

    looked_up: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["10.0.0.1"]

    base = "http://long.test/"
    longest = base + "a" * (MAX_URL_LENGTH - len(base))
    assert refused(longest, policy(resolver=resolver)).code == "url_not_allowed"
    assert refused(longest + "a", policy(resolver=resolver)).code == "invalid_url"
    assert looked_up == ["long.test"]


@pytest.mark.parametrize(("url", "port"), [("http://a.test/x", 80), ("https://a.test/x", 443)])
def test_a_url_without_a_port_uses_its_schemes_default(url: str, port: int) -> None:
    asked: list[int] = []

    def resolver(host: str, port_: int) -> list[str]:
        asked.append(port_)
        return ["10.0.0.1"]

    refused(url, policy(allow_loopback=False, resolver=resolver))
    assert asked == [port]


@pytest.mark.parametrize("extra", [0, 1])
def test_the_byte_cap_admits_exactly_its_value(extra: int) -> None:
    body = JPEG + b"\0" * (1000 - len(JPEG) + extra)
    for route in (send(body), send(body, Content_Length="")):
        with serving({"/a.jpg": route}) as server:
            if extra:
                assert refused(server.url("/a.jpg"), policy(max_bytes=1000)).status == 413
            else:
                assert fetch(server.url("/a.jpg"), policy(max_bytes=1000), soon()) == body


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ],
    ids=["bad-status", "bad-chunk", "two-lengths", "not-http", "too-many-headers"],
)
def test_malformed_upstream_responses_are_bad_responses(raw: bytes) -> None:
    with serving({"/x": lambda h: h.wfile.write(raw)}) as server:
        error = refused(server.url("/x"), policy())
    assert (error.status, error.code) == (422, "bad_response")
    assert "Traceback" not in error.message and len(error.message) < 200


def test_retries_without_retry_after_wait_a_full_jitter_of_the_doubling_backoff(
    monkeypatch,
) -> None:
    from lambda_function.fetch import http as fetch_http

    bounds: list[float] = []
    slept: list[float] = []
    monkeypatch.setattr(fetch_http.random, "uniform", lambda low, high: bounds.append(high) or high)
    monkeypatch.setattr(fetch_http.time, "sleep", slept.append)
    with serving({"/x": send(b"busy", status=503)}) as server:
        refused(server.url("/x"), policy(retries=2, backoff_s=0.2), soon(10))
    assert bounds == pytest.approx([0.2, 0.4, 0.8]) and slept == pytest.approx([0.2, 0.4])


def test_a_retry_after_longer_than_the_jitter_is_waited_in_full(monkeypatch) -> None:
    from lambda_function.fetch import http as fetch_http

    slept: list[float] = []
    monkeypatch.setattr(fetch_http.time, "sleep", slept.append)
    with serving({"/x": send(b"busy", status=429, Retry_After="2")}) as server:
        refused(server.url("/x"), policy(retries=1, backoff_s=0.01), soon(10))
    assert slept == [2.0]


def test_a_watchdog_due_before_its_connection_is_attached_fires_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lambda_function.fetch.connection import Watchdog

    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    with Watchdog(time.monotonic()) as watchdog:
        watchdog._timer.join(2)
    assert watchdog.fired and errors == []
