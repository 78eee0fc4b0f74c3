"""Streaming chat completions through API -> queue -> worker -> stream -> API, with the openai SDK."""

from __future__ import annotations

import uuid

import httpx2
import orjson

from tests.fake_upstream import SSEReply, chunk, text_stream

USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 3,
    "total_tokens": 22,
    "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


def test_streamed_text_reaches_the_sdk_with_one_interception_id(gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["Hel", "lo", " world"], USAGE), delay=0.01))
    stream = gateway.client().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello world"
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    assert uuid.UUID(ids.pop()).version == 4
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 19
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 4


def test_upstream_gets_stream_usage_and_n_and_every_other_field_as_sent(gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])))
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "n": 3,
        "temperature": 0.25,
        "stream_options": {"include_obfuscation": False},
        "x_unknown_field": {"kept": [1, 2, 3]},
    }
    response = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    sent = scenario.received[0].body
    assert sent == {
        **body,
        "stream": True,
        "n": 1,
        "stream_options": {"include_obfuscation": False, "include_usage": True},
    }
    assert list(sent) == list(body)
    assert scenario.received[0].headers["Authorization"] == "Bearer sk-upstream-test-key"


def data_events(raw: bytes) -> list[bytes]:
    return [line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_chunks_are_relayed_byte_for_byte_but_for_the_id(gateway, upstream):
    odd = chunk("x", obfuscation="a1b2", system_fingerprint=None, extra_float=1e-7, emoji="\u00e9\u2603")
    spaced = b'{"id": "chatcmpl-upstream", "object":"chat.completion.chunk","choices":[],"z":1}'
    model, _ = upstream.scenario(SSEReply([odd, spaced, chunk(usage=USAGE)]))
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=10)
    interception_id = response.headers["X-AIBridge-Interception-Id"]
    events = data_events(response.content)
    new_id = b'"id":"' + interception_id.encode() + b'"'
    assert events[0] == odd.replace(b'"id":"chatcmpl-upstream"', new_id)
    assert events[1] == spaced.replace(b'"id": "chatcmpl-upstream"', new_id)
    usage_chunk = orjson.loads(events[2])
    assert usage_chunk["id"] == interception_id
    assert usage_chunk["usage"] == USAGE
    assert list(usage_chunk) == list(orjson.loads(chunk(usage=USAGE)))
    assert events[3] == b"[DONE]"
    assert response.headers["content-type"].startswith("text/event-stream")
