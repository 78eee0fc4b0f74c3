"""Fuzzing the API with hypothesis, against the chat route and every route /openapi.json lists: whatever a
client sends, the answer is JSON in the error shape of the route's family (OpenAI's, Anthropic's under
/anthropic/) or a valid success, never a 5xx (the upstream and the queue are healthy here), and quick."""

from __future__ import annotations

import re
import string
import time
import uuid
from urllib.parse import quote

import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fake_upstream import RawReply, SSEReply, StreamOrNot, completion_body, text_stream

ANSWER_WITHIN = 10.0  # seconds, for any one request
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
HEADER_TEXT = st.text(string.ascii_letters + string.digits + string.punctuation + " ", max_size=40).map(
    str.strip
)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["content-type", "x-upstream-authorization", "last-event-id", "authorization", "x-api-key", "accept"]
    ),
    HEADER_TEXT,
    max_size=3,
)


MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def chat_bodies(model: str) -> st.SearchStrategy[bytes]:
    """Garbage; right chat bodies; right ones with one or two fields (known or not) set to any JSON, or
    with a value nested up to 1100 levels deep."""
    right = st.fixed_dictionaries(
        {"model": st.just(model), "messages": MESSAGES},
        optional={
            "stream": st.booleans(),
            "stream_options": st.just({"include_usage": True}),
            "tools": st.just([TOOL]),
            "n": st.just(1),
            "temperature": st.floats(0, 2),
        },
    )
    field = st.sampled_from(["model", "messages", "stream", "stream_options", "tools", "n", "user", "x"])
    wrong = st.tuples(right, st.dictionaries(field, JSON, min_size=1, max_size=2)).map(
        lambda parts: {**parts[0], **parts[1]}
    )
    deep = st.tuples(right, st.integers(1, 1100)).map(
        lambda parts: orjson.dumps(parts[0])[:-1] + b', "x": ' + b"[" * parts[1] + b"]" * parts[1] + b"}"
    )
    garbage = st.binary(max_size=64) | JSON.map(orjson.dumps)
    return st.one_of(garbage, right.map(orjson.dumps), wrong.map(orjson.dumps), deep)


def assert_in_contract(response: httpx2.Response, seconds: float) -> None:
    assert seconds < ANSWER_WITHIN
    assert response.status_code < 500, response.text
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 400:
        assert content_type == "application/json", response.text
        body = response.json()
        error = body["error"]
        if response.url.path.startswith("/anthropic/"):
            assert body["type"] == "error" and set(error) == {"type", "message"}, body
        else:
            assert {"message", "type", "code"} <= set(error)
        assert isinstance(error["message"], str) and error["message"]
    elif content_type.startswith("text/event-stream"):
        events = [line[6:] for line in response.content.split(b"\n") if line.startswith(b"data: ")]
        assert events[-1] == b"[DONE]"
        assert all("error" not in orjson.loads(event) for event in events[:-1])
    elif not content_type.startswith("text/plain"):  # /metrics: the Prometheus text format
        assert content_type == "application/json"
        response.json()


@pytest.fixture
def client():
    with httpx2.Client(timeout=ANSWER_WITHIN + 5) as made:
        yield made


def test_fuzzed_chat_requests_get_answers_in_the_contract(gateway, upstream, client):
    model, _ = upstream.scenario(
        StreamOrNot(SSEReply(text_stream(["ok"])), RawReply(200, completion_body("ok")))
    )

    @FUZZ
    @given(body=chat_bodies(model), headers=HEADERS)
    def check(body: bytes, headers: dict[str, str]) -> None:
        started = time.monotonic()
        response = client.post(f"{gateway.base_url}/chat/completions", content=body, headers=headers)
        assert_in_contract(response, time.monotonic() - started)

    check()


def test_fuzzed_requests_to_every_route_of_the_openapi_document_get_answers_in_the_contract(gateway, client):
    document = client.get(f"{gateway.url}/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert {"/openai/v1/chat/completions", "/openai/v1/models", "/api/v1/usage"} <= set(paths)
    segment = st.one_of(st.just(str(uuid.uuid4())), st.text(string.printable, min_size=1, max_size=30))

    @FUZZ
    @given(
        path=st.sampled_from(sorted(paths)),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        value=segment,
        query=st.dictionaries(
            st.sampled_from(["since", "until", "limit", "cursor", "actor", "model", "by"]),
            HEADER_TEXT,
            max_size=3,
        ),
        body=st.binary(max_size=64) | JSON.map(orjson.dumps),
        headers=HEADERS,
    )
    def check(
        path: str, method: str, value: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> None:
        url = gateway.url + re.sub(r"\{[^}]+\}", quote(value, safe=""), path)
        started = time.monotonic()
        response = client.request(method, url, params=query, content=body, headers=headers)
        assert_in_contract(response, time.monotonic() - started)

    check()
