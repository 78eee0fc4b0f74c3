"""The AWS event stream of InvokeModelWithResponseStream read as Anthropic's Messages events: whole events
however the frames are split across reads, a corrupt frame an error at once, an exception frame the family's
error after the events before it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from shared.upstream import GatewayFailure, UpstreamCut, UpstreamFailure
from tests.fake_bedrock import chunk_frame, exception_frame, text_events
from worker.bedrock_stream import iter_eventstream_batches
from worker.codec import SseEvent

EVENTS = text_events("hello from Bedrock")
STREAM = b"".join(map(chunk_frame, EVENTS))


class Reads:
    """A response body that arrives in ``pieces``, one network read each."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def iter_any(self):
        for piece in self._pieces:
            yield piece


def is_end(event: SseEvent) -> bool:
    return event.name == "message_stop"


def read(pieces: list[bytes]) -> list[list[SseEvent]]:
    async def collect() -> list[list[SseEvent]]:
        return [batch async for batch in iter_eventstream_batches(Reads(pieces), is_end)]

    return asyncio.run(asyncio.wait_for(collect(), 5))  # a hang fails, it does not stall the suite


def test_every_split_of_the_stream_gives_the_same_events():
    expected = [orjson.loads(orjson.dumps(event)) for event in EVENTS]
    for cut in range(len(STREAM) + 1):
        batches = read([STREAM[:cut], STREAM[cut:]])
        events = [event for batch in batches for event in batch]
        assert [orjson.loads(event.data) for event in events] == expected, cut
        assert [event.name for event in events] == [event["type"] for event in EVENTS]
    first = read([STREAM])[0][0]
    assert first.lines == b"event: message_start\ndata: " + first.data  # what Anthropic's SSE would say


def test_a_byte_at_a_time_gives_each_event_once_complete():
    batches = read([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [len(batch) for batch in batches] == [1] * len(EVENTS)


def test_any_corrupt_byte_of_a_frame_is_an_error_never_a_wait():
    for position in range(len(chunk_frame(EVENTS[0]))):
        corrupt = bytearray(STREAM)
        corrupt[position] ^= 0x5A
        with pytest.raises(GatewayFailure) as failure:
            read([bytes(corrupt)])
        assert (failure.value.status, failure.value.problem[2]) == (502, "upstream_malformed"), position


def test_an_exception_frame_fails_after_the_events_before_it():
    stream = b"".join(map(chunk_frame, EVENTS[:3])) + exception_frame("throttlingException", "slow down")
    relayed: list[SseEvent] = []

    async def collect() -> None:
        async for batch in iter_eventstream_batches(Reads([stream]), is_end):
            relayed.extend(batch)

    with pytest.raises(UpstreamFailure) as failure:
        asyncio.run(asyncio.wait_for(collect(), 5))
    assert [event.name for event in relayed] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert failure.value.status == 429
    assert orjson.loads(failure.value.body) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Bedrock throttlingException: slow down"},
    }


def test_a_stream_that_ends_before_message_stop_is_cut():
    with pytest.raises(UpstreamCut):
        read([b"".join(map(chunk_frame, EVENTS[:-1]))])
