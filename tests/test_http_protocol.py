"""What the API's HTTP protocol answers to a client that breaks HTTP or holds a connection without finishing
its request (slowloris), over raw sockets: the gateway's JSON errors, and connections closed in bounded time."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

TIMEOUT = 1.0  # the deployment's header and body timeouts, seconds
BOUND = TIMEOUT + 1.5  # by when the gateway must have answered or closed


@pytest.fixture(scope="module")
def strict(make_gateway_module):
    return make_gateway_module(AIBRIDGE_HEADER_TIMEOUT=str(TIMEOUT), AIBRIDGE_BODY_TIMEOUT=str(TIMEOUT))


def connect(gateway) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", gateway.port))
    conn.settimeout(BOUND + 3)  # a recv past this fails the test: the connection was held open
    return conn


def read_until_closed(conn: socket.socket, started: float) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes the connection, and the seconds since ``started``."""
    received = b""
    while part := conn.recv(65536):
        received += part
    return received, time.monotonic() - started


def read_response(conn: socket.socket) -> bytes:
    """One whole response (with a Content-Length) from a connection that stays open."""
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < int(parse(raw)[1]["content-length"]):
        raw += conn.recv(65536)
    return raw


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> None:
    got, headers, body = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert error["message"]


@pytest.mark.parametrize(
    "header",
    [b"X-Test: a\rb", b"X-Test: a\nb", b"X-Test: a\x00b", b"X-Te\x00st: a"],
    ids=["bare CR", "bare LF", "NUL in value", "NUL in name"],
)
def test_malformed_http_gets_a_json_400_and_the_connection_closed(strict, header):
    with connect(strict) as conn:
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n" + header + b"\r\n\r\n")
        raw, seconds = read_until_closed(conn, started)
    assert_json_error(raw, 400, "malformed_http")
    assert seconds < BOUND


def test_headers_sent_slowly_get_a_408_within_the_header_timeout(strict):
    request = b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nX-Slow: "
    with connect(strict) as conn:
        started = time.monotonic()
        for byte in request + b"abcd":  # a byte every 0.1 s, the headers never complete
            conn.sendall(bytes([byte]))
            if time.monotonic() - started > TIMEOUT * 0.7:
                break
            time.sleep(0.1)
        raw, seconds = read_until_closed(conn, started)
    assert_json_error(raw, 408, "request_timeout")
    assert TIMEOUT * 0.9 < seconds < BOUND


def test_an_idle_new_connection_is_closed_within_the_header_timeout(strict):
    with connect(strict) as conn:
        started = time.monotonic()
        raw, seconds = read_until_closed(conn, started)
    assert raw == b""  # no request began: nothing to answer
    assert TIMEOUT * 0.9 < seconds < BOUND


def test_a_partial_body_gets_a_408_within_the_body_timeout(strict):
    head = (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    with connect(strict) as conn:
        started = time.monotonic()
        conn.sendall(head + b'{"model": "m", ')
        raw, seconds = read_until_closed(conn, started)
    assert_json_error(raw, 408, "request_timeout")
    assert TIMEOUT * 0.9 < seconds < BOUND


def test_a_partial_body_the_route_does_not_read_is_cut_off_after_its_answer(strict):
    with connect(strict) as conn:
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n{")
        raw, seconds = read_until_closed(conn, started)
    status, _, body = parse(raw)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    assert TIMEOUT * 0.9 < seconds < BOUND


def test_a_kept_alive_connection_stays_usable_past_the_header_timeout(strict):
    request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    with connect(strict) as conn:
        conn.sendall(request)
        first = read_response(conn)
        time.sleep(TIMEOUT + 0.5)  # idle between requests: uvicorn's keep-alive (5 s) governs, not ours
        conn.sendall(request)
        second = read_response(conn)
    assert parse(first)[0] == parse(second)[0] == 200
