"""Pure pieces of the relay path: SSE parsing, id and usage rewriting, error shaping."""

from __future__ import annotations

import asyncio
import logging

import httpx2
import orjson
import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from fastapi import FastAPI, Request
from redis.asyncio import Redis

from api.errors import InvalidRequest
from api.jobs import add_job, new_job
from api.openai_routes import parse_chat_request
from api.relay import sse_events
from api.resume import Resume, resume_point, resume_verdict
from api.unexpected import UnexpectedErrors
from shared.config import Settings
from shared.errors import normalize_error_body
from shared.keys import RedisKeys
from shared.messages import MessageKind, StreamMessage
from shared.providers import RouteFamilies, providers
from shared.sse import EVENT_SEPARATOR
from worker.codec import SseEvent
from worker.families.chat_chunks import replace_id, replace_id_and_usage
from worker.families.openai_chat import is_done
from worker.job_stream import entry_groups
from worker.sse import iter_sse_batches
from worker.usage import add_usage

NEW_ID = orjson.dumps("new-id")


def read_sse(raw: bytes) -> list[list[bytes]]:
    """The events' data of the batches ``iter_sse_batches`` yields for ``raw``, received at once."""

    async def run() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        reader.feed_data(raw)
        reader.feed_eof()
        return [[event.data for event in batch] async for batch in iter_sse_batches(reader, is_done)]

    return asyncio.run(run())


def test_sse_parser_handles_crlf_comments_multiline_data_and_a_missing_final_blank_line():
    raw = (
        b": comment\r\ndata: one\r\n\r\nevent: x\ndata: two\ndata: lines\n\nid: 5\ndata:three\n\ndata: [DONE]"
    )
    assert read_sse(raw) == [[b"one", b"two\nlines", b"three"], [b"[DONE]"]]  # the end at the end of the body


def test_sse_parser_hands_over_every_event_a_read_completes_and_keeps_the_rest():
    async def batches_per_read() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        stream = iter_sse_batches(reader, is_done)
        seen = []
        for received in (
            b"data: a\n\ndata: b\n\ndata: c",
            b"\r",
            b"\n\r\n: only a comment\n\n",
            b"data: d\n\ndata: [DONE]\n\n",
        ):
            reader.feed_data(received)
            if received == b"\r":  # completes nothing: the read must not yield
                continue
            seen.append([event.data for event in await anext(stream)])
        reader.feed_eof()
        seen.extend([[event.data for event in batch] async for batch in stream])
        return seen

    assert asyncio.run(batches_per_read()) == [[b"a", b"b"], [b"c"], [b"d", b"[DONE]"]]


def test_sse_parser_keeps_whole_events_their_names_and_lines_without_id_lines():
    raw = b'event: message_start\ndata: {"a":1}\n\nid: 9\r\nevent: ping\r\ndata: {}\r\n\r\n: alive\n\ndata: [DONE]\n\n'

    async def run() -> list[SseEvent]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        reader.feed_data(raw)
        reader.feed_eof()
        return [event async for batch in iter_sse_batches(reader, is_done) for event in batch]

    assert asyncio.run(run()) == [
        SseEvent("message_start", b'{"a":1}', b'event: message_start\ndata: {"a":1}'),
        SseEvent("ping", b"{}", b"event: ping\ndata: {}"),
        SseEvent(None, b"[DONE]", b"data: [DONE]"),
    ]


def test_events_of_one_entry_each_carry_an_id_a_client_can_resume_after():
    entry = EVENT_SEPARATOR.join([b'data: {"n":1}', b"data: two\ndata: lines", b'data: {"n":3}'])
    assert sse_events(b"7-1", entry) == (
        b'id: 7-1/0\ndata: {"n":1}\n\nid: 7-1/1\ndata: two\ndata: lines\n\nid: 7-1\ndata: {"n":3}\n\n'
    )
    assert sse_events(b"7-1", entry, skip=2) == b'id: 7-1\ndata: {"n":3}\n\n'
    assert sse_events(b"7-1", b"data: x") == b"id: 7-1\ndata: x\n\n"
    assert resume_point(None) == (b"0-0", (b"", 0))
    assert resume_point("7-1") == (b"7-1", (b"", 0))
    assert resume_point("7-1/1") == (b"7-0", (b"7-1", 2))
    assert resume_point("7-0/0") == (b"6-18446744073709551615", (b"7-0", 1))
    for bad in ("7", "7-1/", "x-1", f"{2**64}-0", "7-1/1/2", "7-1\n", "\u0661-1"):
        with pytest.raises(InvalidRequest):
            resume_point(bad)


def test_an_event_id_with_a_part_over_20_digits_is_refused_not_parsed():
    assert resume_point(f"{2**64 - 1}-{2**64 - 1}/{10**20 - 1}")[0] == f"{2**64 - 1}-{2**64 - 2}".encode()
    for bad in ("1" * 4301 + "-0", "0-" + "1" * 21, "7-1/" + "9" * 21, "0" * 21 + "-1"):
        with pytest.raises(InvalidRequest):
            resume_point(bad)


def xinfo(entries: list[tuple[bytes, bytes]], *, redis7: bool, added: int = 0, deleted: bytes = b"0-0"):
    """XINFO STREAM as redis-py parses it, for a stream holding ``entries`` (id, kind); Redis 7 adds the
    count of entries ever added and the largest deleted id."""
    info = {
        "length": len(entries),
        "last-generated-id": entries[-1][0] if entries else b"9-9",
        "first-entry": (entries[0][0], {b"k": entries[0][1]}) if entries else None,
        "last-entry": (entries[-1][0], {b"k": entries[-1][1]}) if entries else None,
    }
    if redis7:
        info.update({"entries-added": added or len(entries), "max-deleted-entry-id": deleted})
    return info


STREAM = [
    (b"5-0", b"heartbeat"),
    (b"5-1", b"open"),
    (b"6-0", b"chunk"),
    (b"7-0", b"chunk"),
    (b"8-0", b"done"),
]


@pytest.mark.parametrize("redis7", [True, False])
def test_a_resume_is_relayed_ended_at_once_or_refused_from_what_the_stream_still_holds(redis7):
    whole = xinfo(STREAM, redis7=redis7)
    assert resume_verdict(whole, b"0-0", None) is Resume.RELAY
    assert resume_verdict(whole, b"6-0", b"6-0") is Resume.RELAY
    assert resume_verdict(whole, b"6-18446744073709551615", b"7-0") is Resume.RELAY  # within 7-0
    assert resume_verdict(whole, b"8-0", b"8-0") is Resume.FINISHED
    assert resume_verdict(whole, b"8-1", b"8-1") is Resume.BEYOND_END
    running = xinfo(STREAM[:-1], redis7=redis7)
    assert resume_verdict(running, b"7-0", b"7-0") is Resume.RELAY  # more is still to come
    head_cut = xinfo(STREAM[3:], redis7=redis7, added=len(STREAM))
    assert resume_verdict(head_cut, b"0-0", None) is Resume.GONE
    assert resume_verdict(head_cut, b"6-0", b"6-0") is Resume.GONE
    assert resume_verdict(head_cut, b"7-0", b"7-0") is Resume.RELAY
    assert resume_verdict(xinfo([], redis7=redis7, added=5), b"6-0", b"6-0") is Resume.GONE
    only_heartbeats_cut = xinfo(STREAM[1:], redis7=redis7, added=len(STREAM))
    assert resume_verdict(only_heartbeats_cut, b"6-0", b"6-0") is Resume.RELAY


def test_on_redis_7_a_deleted_entry_after_the_clients_is_seen_wherever_it_was():
    middle_gone = xinfo([*STREAM[:3], STREAM[4]], redis7=True, added=len(STREAM), deleted=b"7-0")
    assert resume_verdict(middle_gone, b"0-0", None) is Resume.GONE
    assert resume_verdict(middle_gone, b"6-0", b"6-0") is Resume.GONE
    assert (
        resume_verdict(middle_gone, b"7-0", b"7-0") is Resume.RELAY
    )  # 7-0 itself was seen: only the end follows


def test_replace_id_keeps_every_other_byte():
    raw = b'{"id" :  "abc","choices":[{"delta":{"tool_calls":[{"id":"call_1"}]}}],"z":1.0e-7}'
    assert replace_id(raw, orjson.loads(raw), NEW_ID) == raw.replace(b'"id" :  "abc"', b'"id":"new-id"')


def test_replace_id_falls_back_to_reencoding_when_the_text_does_not_match():
    raw = b'{"id":"a\\/b","x":[1,2]}'  # the escaped slash does not match orjson's encoding of "a/b"
    assert orjson.loads(replace_id(raw, orjson.loads(raw), NEW_ID)) == {"id": "new-id", "x": [1, 2]}
    no_id = b'{"x":1}'
    assert replace_id(no_id, orjson.loads(no_id), NEW_ID) == b'{"x":1,"id":"new-id"}'


def test_usage_replacement_keeps_key_order():
    parsed = orjson.loads(b'{"id":"a","choices":[],"usage":{"prompt_tokens":1},"extra":true}')
    out = replace_id_and_usage(parsed, NEW_ID, {"prompt_tokens": 9})
    assert out == b'{"id":"new-id","choices":[],"usage":{"prompt_tokens":9},"extra":true}'


def test_usage_is_summed_field_by_field_including_details():
    first = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}
    second = {
        "prompt_tokens": 15,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 1, "audio": 2},
    }
    assert add_usage(add_usage({}, first), second) == {
        "prompt_tokens": 25,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 5, "audio": 2},
    }


def test_error_bodies_are_normalized_to_the_openai_shape():
    complete = b'{"error":{"message":"m","type":"t","code":"c","param":null}}'
    assert normalize_error_body(complete, "x") == complete
    partial = orjson.loads(normalize_error_body(b'{"error":{"message":"m","type":"server_error"}}', "x"))
    assert partial == {"error": {"message": "m", "type": "server_error", "code": None}}
    text = orjson.loads(normalize_error_body(b"upstream exploded", "upstream answered 500"))
    assert text["error"]["message"] == "upstream answered 500: upstream exploded"


def test_stream_messages_round_trip_through_redis_fields():
    message = StreamMessage(kind=MessageKind.ERROR, status=429, data=b'{"error":{}}')
    assert StreamMessage.from_fields(message.to_fields()) == message
    assert (
        StreamMessage.from_fields(StreamMessage(kind=MessageKind.DONE).to_fields()).kind is MessageKind.DONE
    )
    chunk = StreamMessage(kind=MessageKind.CHUNK, data=b"data: {}")
    assert StreamMessage.chunk_fields(b"data: {}") == chunk.to_fields()
    assert StreamMessage.from_fields(chunk.to_fields()) == chunk


def test_a_body_nested_deeper_than_the_job_can_carry_is_refused_before_anything_is_queued():
    def queue(depth: int) -> int:
        body = parse_chat_request(
            b'{"model": "m", "messages": [{}], "x": %s}' % (b"[" * depth + b"]" * depth)
        )
        pipe = Redis().pipeline(transaction=False)  # never executed: no server needed
        add_job(pipe, RedisKeys("t:"), new_job("i", body, None), expires=1)
        return len(pipe.command_stack)

    assert queue(250) == 1
    with pytest.raises(InvalidRequest, match="250 levels"):
        queue(251)


OPENAI_500 = {
    "error": {
        "message": "the gateway failed while handling the request",
        "type": "server_error",
        "code": "internal_error",
        "param": None,
    }
}
ANTHROPIC_500 = {
    "type": "error",
    "error": {"type": "api_error", "message": "the gateway failed while handling the request"},
}


@pytest.mark.parametrize(("path", "expected"), [("/boom", OPENAI_500), ("/anthropic/boom", ANTHROPIC_500)])
def test_an_unexpected_exception_is_a_500_in_the_routes_shape_and_one_log_line_without_the_body(
    caplog, path, expected
):
    app = FastAPI()
    app.add_middleware(UnexpectedErrors)
    app.state.aibridge_routes = RouteFamilies(providers(Settings()))

    @app.post(path)
    async def boom(request: Request) -> None:
        await request.body()
        raise RuntimeError("boom")

    async def call() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post(path, content=b"sk-secret-in-the-body")

    with caplog.at_level(logging.ERROR, logger="api.unexpected"):
        response = asyncio.run(call())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith(f"unexpected RuntimeError in POST {path} at ") and "test_units.py" in lines[0]
    assert "sk-secret" not in caplog.text


def test_one_reads_chunks_are_cut_into_entries_of_bounded_size():
    small = [b"a" * 10] * 5
    assert entry_groups(small, 100) == [small]
    payloads = [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 200, b"e" * 10]
    groups = entry_groups(payloads, 100)
    assert groups == [[b"a" * 40, b"b" * 40], [b"c" * 40], [b"d" * 200], [b"e" * 10]]
    assert [payload for group in groups for payload in group] == payloads


def test_token_counts_add_field_by_field_and_extra_by_name():
    from shared.token_counts import TokenCounts

    first = TokenCounts(input=3, output=5, cache_read=7, extra={"reasoning_tokens": 2})
    second = TokenCounts(input=1, output=1, cache_write=4, extra={"reasoning_tokens": 1, "audio_tokens": 6})
    assert first + second == TokenCounts(
        input=4, output=6, cache_read=7, cache_write=4, extra={"reasoning_tokens": 3, "audio_tokens": 6}
    )
