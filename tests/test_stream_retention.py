"""Streams keep every event a client may still ask for: a long answer is never trimmed, a resume for events
that are really gone is a 410 before the stream, a resume past the end of a finished stream ends at once,
and a stream that outgrows AIBRIDGE_STREAM_MAX_BYTES ends with an error event, whole."""

from __future__ import annotations

import time

import httpx2
import orjson

from tests.fake_upstream import SSEReply, text_stream
from tests.test_resume import events, resume, text_of

HI = [{"role": "user", "content": "hi"}]
OLD_MAXLEN = 10_000  # AIBRIDGE_STREAM_MAXLEN's default, the count a long answer used to be trimmed to


def stream_whole(gateway, model: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A streamed request read to its end: the interception id and every event, in order."""
    body = {"model": model, "messages": HI, "stream": True}
    reply = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200
    return reply.headers["X-AIBridge-Interception-Id"], events(reply.content)


def stream_key(gateway, interception_id: str) -> str:
    return f"{gateway.prefix}stream:{interception_id}"


def test_every_event_of_a_30000_token_answer_can_be_resumed(gateway, upstream, redis_client):
    words = [f"t{i} " for i in range(30_000)]
    model, _ = upstream.scenario(SSEReply(text_stream(words), pace=0.0003))  # one token per worker read
    interception_id, whole = stream_whole(gateway, model)
    assert text_of(whole) == "".join(words)

    rest = events(resume(gateway.url, interception_id, whole[99][0]).content)
    assert len(rest) == len(whole) - 100, f"{len(whole) - 100 - len(rest)} events missing"
    assert rest == whole[100:]  # every later event, once each, in order
    replay = events(resume(gateway.url, interception_id, None).content)
    assert len(replay) == len(whole), f"{len(whole) - len(replay)} events missing"
    assert replay == whole
    key = stream_key(gateway, interception_id)
    entries = redis_client.xlen(key)
    print(f"stream entries: {entries}, {redis_client.memory_usage(key, samples=0)} bytes in Redis")
    assert entries > OLD_MAXLEN * 1.2, "the upstream's reads were merged: the test would not exercise a cap"


def test_a_resume_for_events_that_are_gone_is_a_410_before_the_stream(gateway, upstream, redis_client):
    model, _ = upstream.scenario(SSEReply(text_stream([f"w{i} " for i in range(30)]), delay=0.01))
    interception_id, whole = stream_whole(gateway, model)
    key = stream_key(gateway, interception_id)
    chunk_ids = [
        entry_id.decode() for entry_id, fields in redis_client.xrange(key) if fields[b"k"] == b"chunk"
    ]
    assert len(chunk_ids) > 12
    redis_client.xtrim(
        key, minid=chunk_ids[10], approximate=False
    )  # as an operator's XTRIM would: entries 0-9 are gone

    for last_event_id in (chunk_ids[3], None):
        gone = resume(gateway.url, interception_id, last_event_id)
        assert gone.status_code == 410
        assert gone.headers["content-type"] == "application/json"
        assert gone.json()["error"]["code"] == "events_expired"
        assert set(gone.json()["error"]) >= {"message", "type", "code"}
    kept = resume(gateway.url, interception_id, chunk_ids[12])
    assert kept.status_code == 200
    position = next(n for n, (event_id, _) in enumerate(whole) if event_id == chunk_ids[12])
    assert events(kept.content) == whole[position + 1 :]


def test_a_resume_past_the_end_of_a_finished_stream_ends_at_once(gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["a ", "b "])))
    interception_id, whole = stream_whole(gateway, model)
    started = time.monotonic()
    after_end = resume(gateway.url, interception_id, whole[-1][0])
    elapsed = time.monotonic() - started
    assert after_end.status_code == 200
    assert events(after_end.content) == []
    assert elapsed < 1, f"took {elapsed:.2f}s"


def test_an_oversized_malformed_or_unknown_last_event_id_is_a_json_400(gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["a "])))
    interception_id, whole = stream_whole(gateway, model)
    last_ms = int(whole[-1][0].split("-")[0])
    for bad in ("1" * 4301 + "-0", "1-" + "2" * 21, "1-2/" + "3" * 4301, f"{last_ms + 60_000}-0"):
        refused = resume(gateway.url, interception_id, bad)
        assert refused.status_code == 400, bad[:40]
        assert refused.json()["error"]["code"] == "invalid_request"


def test_an_answer_over_the_byte_bound_ends_with_an_error_event_and_stays_whole(
    make_gateway, upstream, redis_client
):
    bound = 100_000
    deployment = make_gateway(AIBRIDGE_STREAM_MAX_BYTES=str(bound))
    words = [f"word{i} " for i in range(2_000)]
    model, _ = upstream.scenario(SSEReply(text_stream(words), pace=0.0003))  # not all in the first read
    interception_id, whole = stream_whole(deployment, model)
    relayed = [event for event in whole if event[1] != b"[DONE]"]
    error = orjson.loads(relayed[-1][1])["error"]
    assert error["code"] == "stream_too_large"
    assert 0 < len(text_of(relayed[:-1])) < len("".join(words))
    assert "".join(words).startswith(text_of(relayed[:-1]))
    stored = redis_client.xrange(stream_key(deployment, interception_id))
    assert sum(len(fields.get(b"d", b"")) for _, fields in stored if fields[b"k"] == b"chunk") <= bound
    assert events(resume(deployment.url, interception_id, None).content) == whole
