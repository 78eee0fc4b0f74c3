"""Resumable streams: every SSE event carries its stream entry id; a client reconnects to any API instance at
/openai/v1/chat/completions/{id}/events with Last-Event-ID and gets exactly the events after it, then the
live tail."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable

import httpx2
import orjson

from tests.fake_upstream import SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]
WORDS = [f"w{i} " for i in range(30)]


def events(raw: bytes) -> list[tuple[str, bytes]]:
    """(id, data) of each complete event in ``raw``."""
    found = []
    for block in raw.split(b"\n\n"):
        lines = dict(
            line.split(b": ", 1) for line in block.split(b"\n") if line.startswith((b"id: ", b"data: "))
        )
        if b"data" in lines:
            found.append((lines.get(b"id", b"").decode(), lines[b"data"]))
    return found


def text_of(received: list[tuple[str, bytes]]) -> str:
    parts = []
    for _, data in received:
        if data != b"[DONE]" and (chunk := orjson.loads(data)).get("choices"):
            parts.append(chunk["choices"][0]["delta"].get("content") or "")
    return "".join(parts)


def stream_order(event_id: str) -> tuple[int, int, float]:
    """An event id's place in its stream: ``<entry id>/<n>`` is the n-th event of an entry, before the entry's
    last event, ``<entry id>`` (the upstream's ``[DONE]`` often shares its entry with the last chunk)."""
    entry, _, n = event_id.partition("/")
    ms, seq = entry.split("-")
    return int(ms), int(seq), int(n) if n else math.inf


def start_and_drop(
    base: str, port: int, model: str, keep: int, before_drop: Callable[[], object] = lambda: None
) -> tuple[str, list[tuple[str, bytes]]]:
    """Stream through the API at ``port``, keep the first ``keep`` events, call ``before_drop``, then drop
    the connection."""
    body = orjson.dumps({"model": model, "messages": HI, "stream": True})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        raw = b""
        while len(events(raw.partition(b"\r\n\r\n")[2])) < keep:
            raw += conn.recv(65536)
        before_drop()
    head, _, payload = raw.partition(b"\r\n\r\n")
    interception_id = next(
        line.split(b": ")[1].decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-aibridge")
    )
    # chunked transfer encoding: keep the events whose blocks are complete
    return interception_id, [e for e in events(payload) if e[1].startswith((b"{", b"["))][:keep]


def resume(base: str, interception_id: str, last_event_id: str | None) -> httpx2.Response:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return httpx2.get(
        f"{base}/openai/v1/chat/completions/{interception_id}/events", headers=headers, timeout=30
    )


def test_a_dropped_client_resumes_with_no_gap_and_no_duplicate(make_gateway, upstream):
    deployment = make_gateway(AIBRIDGE_RESUME_GRACE="3")
    model, _ = upstream.scenario(SSEReply(text_stream(WORDS), delay=0.05))
    interception_id, first = start_and_drop(deployment.url, deployment.port, model, keep=5)
    time.sleep(0.3)
    rest = events(resume(deployment.url, interception_id, first[-1][0]).content)
    ids = [event_id for event_id, _ in first + rest]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, key=stream_order)
    assert text_of(first + rest) == "".join(WORDS)
    assert rest[-1][1] == b"[DONE]"


def test_a_client_resumes_on_another_api_instance_after_its_own_died(make_gateway, upstream):
    deployment = make_gateway()
    other_url, _ = deployment.add_api()
    model, _ = upstream.scenario(SSEReply(text_stream(WORDS), delay=0.05))

    def die() -> None:  # before its client's connection drops: a dead instance cancels nothing
        deployment.api.kill()
        deployment.api.wait(10)

    interception_id, first = start_and_drop(deployment.url, deployment.port, model, keep=5, before_drop=die)
    rest = events(resume(other_url, interception_id, first[-1][0]).content)
    assert text_of(first + rest) == "".join(WORDS)
    assert len({i for i, _ in first + rest}) == len(first + rest)


def test_without_a_grace_a_dropped_client_cancels_and_a_resume_ends_with_that(make_gateway, upstream):
    deployment = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(WORDS), delay=0.2))
    interception_id, first = start_and_drop(deployment.url, deployment.port, model, keep=3)
    started = time.monotonic()
    rest = events(resume(deployment.url, interception_id, first[-1][0]).content)
    assert time.monotonic() - started < 3
    assert orjson.loads(rest[-1][1])["error"]["code"] == "client_disconnected"  # no [DONE] after it
    assert len(text_of(first + rest)) < len("".join(WORDS))


def test_resume_errors(gateway):
    unknown = resume(gateway.url, "8a4bd1b6-33c7-4ac5-9d5f-9b9f3e6c0b51", None)
    assert unknown.status_code == 404
    assert set(unknown.json()["error"]) >= {"message", "type", "code"}
    assert resume(gateway.url, "not-an-id", None).status_code == 400
    assert resume(gateway.url, "8a4bd1b6-33c7-4ac5-9d5f-9b9f3e6c0b51", "yesterday").status_code == 400
