"""Pure pieces of the relay path: SSE parsing, id and usage rewriting, error shaping."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from shared.errors import normalize_error_body
from shared.messages import MessageKind, StreamMessage
from worker.chunks import replace_id, replace_id_and_usage
from worker.sse import iter_sse_data
from worker.usage import add_usage

NEW_ID = orjson.dumps("new-id")


def parse_sse(raw: bytes) -> list[bytes]:
    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        reader.feed_data(raw)
        reader.feed_eof()
        return [data async for data in iter_sse_data(reader)]

    return asyncio.run(run())


def test_sse_parser_handles_crlf_comments_multiline_data_and_a_missing_final_blank_line():
    raw = b": comment\r\ndata: one\r\n\r\nevent: x\ndata: two\ndata: lines\n\nid: 5\ndata:three\n\ndata: last"
    assert parse_sse(raw) == [b"one", b"two\nlines", b"three", b"last"]


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
