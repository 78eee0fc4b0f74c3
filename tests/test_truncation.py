"""An upstream that stops before its stream's end: a clean close, a reset or a framing completed without the
end marker, chunked, with a Content-Length or delimited by the connection's end, before and after the first
chunk.
The client gets a 502 before the stream opened and an error event after it, never a ``[DONE]`` the upstream
did not send; the record says the upstream was cut."""

from __future__ import annotations

import asyncio
import threading

import httpx2
import openai
import orjson
import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from shared.upstream import UpstreamCut
from tests.fake_upstream import (
    CutReply,
    RawReply,
    SSEReply,
    chunk,
    completion_body,
    sse_body,
    text_stream,
    tool_call_stream,
)
from tests.test_recording import recorded
from worker.codec import SseEvent
from worker.families.openai_chat import is_done
from worker.sse import iter_sse_batches

HI = [{"role": "user", "content": "hi"}]
LOST, TRUNCATED = "upstream_connection_lost", "upstream_truncated"
CUTS = [  # framing, ending, the error code the client gets
    ("chunked", "fin", LOST),
    ("chunked", "rst", LOST),
    ("chunked", "end", TRUNCATED),
    ("length", "fin", LOST),
    ("length", "rst", LOST),
    ("length", "end", TRUNCATED),
    ("close", "fin", TRUNCATED),
    ("close", "rst", TRUNCATED),  # aiohttp takes a reset as the end of a close-delimited body
]


def events(body: bytes) -> tuple[list[bytes], UpstreamCut | None]:
    """What ``iter_sse_batches`` yields for ``body`` (received at once), and the cut it raised, if any."""

    async def run() -> tuple[list[bytes], UpstreamCut | None]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        reader.feed_data(body)
        reader.feed_eof()
        seen: list[bytes] = []
        try:
            async for batch in iter_sse_batches(reader, is_done):
                seen.extend(event.data for event in batch)
        except UpstreamCut as cut:
            return seen, cut
        return seen, None

    return asyncio.run(run())


def test_the_chat_completions_end_is_a_done_event_and_nothing_else():
    assert is_done(SseEvent(None, b"[DONE]", b"data: [DONE]"))
    for other in (b"[DONE", b"DONE", b'{"choices": []}', b"", b"[DONE]\n"):
        assert not is_done(SseEvent(None, other, b"data: " + other))


def test_a_stream_with_its_end_yields_up_to_it_and_raises_nothing():
    assert events(b"data: a\n\ndata: [DONE]\n\ndata: after\n\n") == ([b"a", b"[DONE]"], None)
    assert events(b"data: a\r\n\r\ndata: [DONE]") == ([b"a", b"[DONE]"], None)  # no final blank line


@pytest.mark.parametrize(
    ("body", "before"),
    [
        (b"", []),
        (b": just a comment\n\n", []),
        (b"data: a\n\ndata: b\n\n", [b"a", b"b"]),
        (b'data: a\n\ndata: {"cho', [b"a"]),  # cut inside a line: the fragment is not relayed
        (b"data: a\n\ndata: b\n", [b"a", b"b"]),  # whole lines, their blank line left out
        (b"data: a\n\ndata: [DONE]x\n\n", [b"a", b"[DONE]x"]),
    ],
)
def test_a_stream_that_ends_without_its_end_raises_a_truncation(body, before):
    seen, cut = events(body)
    assert seen == before
    assert cut is not None and cut.status == 502
    assert orjson.loads(cut.body)["error"] == {
        "message": "the upstream's stream ended before its end marker: the answer is incomplete",
        "type": "upstream_error",
        "code": TRUNCATED,
    }


def data_events(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def assert_cut_recorded(gateway, response) -> None:
    record = recorded(gateway, response.headers["X-AIBridge-Interception-Id"])
    assert record["outcome"] == "upstream_cut"


@pytest.mark.parametrize("body", [b"", b'data: {"id": "chatcmpl-up'], ids=["empty", "partial"])
@pytest.mark.parametrize(("framing", "ending", "code"), CUTS)
def test_a_cut_before_the_first_chunk_is_a_502(gateway, upstream, framing, ending, code, body):
    model, _ = upstream.scenario(CutReply(body, framing, ending))
    request = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{gateway.base_url}/chat/completions", json=request, timeout=10)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", code)
    assert error["message"]
    assert_cut_recorded(gateway, response)


@pytest.mark.parametrize(("framing", "ending", "code"), CUTS)
def test_a_cut_after_the_first_chunk_ends_the_stream_with_an_error_event(
    gateway, upstream, framing, ending, code
):
    release = threading.Event()
    model, _ = upstream.scenario(
        CutReply(sse_body(text_stream(["one", "two"])), framing, ending, release=release)
    )
    request = {"model": model, "messages": HI, "stream": True}
    received = b""
    with httpx2.stream("POST", f"{gateway.base_url}/chat/completions", json=request, timeout=10) as response:
        assert response.status_code == 200
        for part in response.iter_bytes():
            received += part
            if b"data: " in received:
                release.set()  # the first chunk is through: now the upstream cuts
    assert release.is_set()
    *chunks, last = data_events(received)
    assert [orjson.loads(data)["choices"][0]["delta"]["content"] for data in chunks] == ["one", "two"]
    error = orjson.loads(last)["error"]
    assert (error["type"], error["code"]) == ("upstream_error", code)
    assert b"[DONE]" not in received
    assert_cut_recorded(gateway, response)


def test_the_openai_sdk_raises_on_the_error_event_of_a_cut_stream(gateway, upstream):
    release = threading.Event()
    model, _ = upstream.scenario(
        CutReply(sse_body(text_stream(["one", "two"])), "chunked", "rst", release=release)
    )
    stream = gateway.client().chat.completions.create(model=model, messages=HI, stream=True)
    parts = iter(stream)
    received = [next(parts).choices[0].delta.content]
    release.set()
    with pytest.raises(openai.APIError) as caught:
        received.extend(part.choices[0].delta.content for part in parts)
    assert received == ["one", "two"]
    assert "broke before the answer was complete" in caught.value.message
    assert caught.value.code == LOST


def test_the_done_the_client_gets_is_the_upstreams_own_event(gateway, upstream):
    body = sse_body([*text_stream(["all", " there"]), b"[DONE]"])  # one write: one read, one stream entry
    model, _ = upstream.scenario(RawReply(200, body, headers={"Content-Type": "text/event-stream"}))
    request = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{gateway.base_url}/chat/completions", json=request, timeout=10)
    ids = [line[4:] for line in response.content.split(b"\n") if line.startswith(b"id: ")]
    assert data_events(response.content)[-1] == b"[DONE]"
    assert response.content.count(b"[DONE]") == 1
    assert ids[-2] == ids[-1] + b"/1"  # relayed in the entry of the chunks it came with, not added after
    record = recorded(gateway, response.headers["X-AIBridge-Interception-Id"])
    assert record["outcome"] == "ok"


@pytest.mark.parametrize(
    ("framing", "ending", "outcome"),
    [
        ("chunked", "fin", "upstream_cut"),
        ("chunked", "rst", "upstream_cut"),
        ("length", "fin", "upstream_cut"),
        ("length", "rst", "upstream_cut"),
        ("close", "fin", "upstream_error"),  # a close-delimited body has no length to fall short of:
        ("close", "rst", "upstream_error"),  # its half a completion is malformed JSON
    ],
)
def test_a_blocking_answer_cut_short_is_a_502(gateway, upstream, framing, ending, outcome):
    half = completion_body("a whole answer, cut")[:40]
    model, _ = upstream.scenario(CutReply(half, framing, ending, content_type="application/json"))
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions", json={"model": model, "messages": HI}, timeout=10
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    record = recorded(gateway, response.headers["X-AIBridge-Interception-Id"])
    assert record["outcome"] == outcome


def test_a_tool_loop_relays_only_the_last_rounds_done(tool_gateway, upstream):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "ping"}', preamble="Checking. ")),
        SSEReply(text_stream(["Done pinging."])),
    )
    request = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{tool_gateway.base_url}/chat/completions", json=request, timeout=30)
    assert len(scenario.received) == 2
    assert response.content.count(b"[DONE]") == 1
    assert data_events(response.content)[-1] == b"[DONE]"


def test_a_tool_loop_cut_in_its_last_round_ends_with_the_error_event(tool_gateway, upstream):
    model, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "ping"}', preamble="Checking. ")),
        CutReply(sse_body([chunk("half")]), "chunked", "end"),
    )
    request = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{tool_gateway.base_url}/chat/completions", json=request, timeout=30)
    assert response.status_code == 200
    assert b"[DONE]" not in response.content
    assert orjson.loads(data_events(response.content)[-1])["error"]["code"] == TRUNCATED


def test_the_round_cap_error_is_the_streams_last_event(tool_gateway, upstream):
    model, _ = upstream.scenario(SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "again"}')))
    request = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{tool_gateway.base_url}/chat/completions", json=request, timeout=30)
    assert b"[DONE]" not in response.content
    assert orjson.loads(data_events(response.content)[-1])["error"]["code"] == "tool_round_limit"


def test_a_worker_lost_mid_stream_ends_with_the_error_event_and_no_done(make_gateway, upstream):
    doomed = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(["first", "never"]), pause_after=1, pause=30))
    request = {"model": model, "messages": HI, "stream": True}
    received = b""
    with httpx2.stream("POST", f"{doomed.base_url}/chat/completions", json=request, timeout=15) as response:
        for part in response.iter_bytes():
            received += part
            if b"first" in received and doomed.workers[0].returncode is None:
                doomed.workers[0].kill()
                doomed.workers[0].wait(5)
    assert b"[DONE]" not in received
    assert orjson.loads(data_events(received)[-1])["error"]["code"] == "worker_timeout"
