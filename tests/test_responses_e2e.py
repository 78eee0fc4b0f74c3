"""OpenAI Responses end to end: the recorded exchanges replayed through real API and worker processes, the
official ``openai`` SDK as the client, the passthrough of what the gateway does not own, and the MCP tool
loop against a real MCP server."""

from __future__ import annotations

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import ResponseErrorEvent, ResponseStreamEvent

from tests.anthropic_events import sse
from tests.anthropic_upstream import events, sse_reply
from tests.fake_upstream import RawReply, SSEReply
from tests.fixtures import RESPONSES_FIXTURES, as_reply, needs_responses_fixtures, read_txtar
from tests.responses_events import TEXT, USAGE, as_sse, call, data_of, injected_name, response_events

WORKSPACES = "bmcp_coder_coder_list_workspaces"  # what the "coder" MCP server of tool_gateway offers
SSE = "text/event-stream"
JSON = "application/json"


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key="unused", max_retries=0)


def case(kind: str, name: str) -> dict[str, bytes]:
    return read_txtar(RESPONSES_FIXTURES / kind / f"{name}.txtar")


def replayed(upstream, kind: str, name: str, *sections: str, content_type: str) -> tuple[dict, object]:
    """The case's request for a scenario answering with its ``sections``, in order."""
    recorded = case(kind, name)
    model, scenario = upstream.scenario(*(as_reply(recorded[s], content_type) for s in sections))
    return {**orjson.loads(recorded["request"]), "model": model}, scenario


def plain_cases(kind: str) -> list[str]:
    if not RESPONSES_FIXTURES.is_dir():
        return []
    key = "streaming" if kind == "streaming" else "non-streaming"
    return [
        path.stem
        for path in sorted((RESPONSES_FIXTURES / kind).glob("*.txtar"))
        if set(sections := read_txtar(path)) == {"request", key}
        and not sections[key].startswith(b"HTTP/")
        and b"event: error" not in sections[key]  # the error event cases have tests of their own
    ]


def post(gateway, body: dict) -> httpx2.Response:
    return httpx2.post(f"{gateway.url}/openai/v1/responses", json=body, timeout=60)


@needs_responses_fixtures
def test_sdk_streams_and_creates_a_response_through_the_gateway(gateway, upstream):
    request, scenario = replayed(upstream, "streaming", "simple", "streaming", "streaming", content_type=SSE)
    blocking, _ = replayed(upstream, "blocking", "simple", "non-streaming", content_type=JSON)
    sdk = client(gateway)
    streamed = list(sdk.responses.create(model=request["model"], input=request["input"], stream=True))
    assert streamed[-1].type == "response.completed"
    assert [event.sequence_number for event in streamed] == list(range(len(streamed)))
    text = "".join(event.delta for event in streamed if event.type == "response.output_text.delta")
    assert text == streamed[-1].response.output_text
    with sdk.responses.stream(model=request["model"], input=request["input"]) as stream:
        final = stream.get_final_response()
    assert final.output_text == text and final.usage.input_tokens == 11
    answer = sdk.responses.create(model=blocking["model"], input=blocking["input"])
    recorded = orjson.loads(case("blocking", "simple")["non-streaming"])
    assert answer.id == recorded["id"] and answer.output_text == recorded["output"][0]["content"][0]["text"]
    assert scenario.received[0].path == "/v1/responses" and scenario.received[0].body["stream"] is True


@needs_responses_fixtures
@pytest.mark.parametrize("name", plain_cases("streaming"))
def test_a_recorded_stream_replays_event_for_event(gateway, upstream, name):
    request, _ = replayed(upstream, "streaming", name, "streaming", content_type=SSE)
    response = post(gateway, request)
    assert response.status_code == 200
    # an event with no data line dispatches nothing (wrong_response_format's "da\nta:"): not relayed
    sent = [event.data for event in sse(case("streaming", name)["streaming"]) if event.data]
    got = [line[6:] for line in response.content.split(b"\n") if line.startswith(b"data: ")]
    assert len(got) == len(sent)
    numbered = [data for data in map(data_of, (b"data: " + d for d in got)) if data is not None]
    first = numbered[0]["sequence_number"]
    assert [data["sequence_number"] for data in numbered] == list(range(first, first + len(numbered)))
    for mine, theirs in zip(got, sent, strict=True):
        if (parsed := data_of(b"data: " + theirs)) is None:
            assert mine == theirs
        else:
            assert orjson.loads(mine) == {**parsed, "sequence_number": orjson.loads(mine)["sequence_number"]}


@needs_responses_fixtures
@pytest.mark.parametrize("name", plain_cases("blocking"))
def test_a_recorded_blocking_answer_replays_as_recorded(gateway, upstream, name):
    request, _ = replayed(upstream, "blocking", name, "non-streaming", content_type=JSON)
    response = post(gateway, {**request, "stream": False})
    recorded = case("blocking", name)["non-streaming"]
    if name == "wrong_response_format":
        assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_error"
    else:
        assert response.status_code == 200 and response.json() == orjson.loads(recorded)


@needs_responses_fixtures
@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("streaming", openai.RateLimitError, "rate_limit_exceeded"),
        ("blocking", openai.AuthenticationError, "invalid_api_key"),
    ],
)
def test_upstream_errors_reach_the_sdk_as_its_exception_types(gateway, upstream, kind, error, code):
    section = "streaming" if kind == "streaming" else "non-streaming"
    request, _ = replayed(upstream, kind, "http_error", section, content_type=JSON)
    with pytest.raises(error) as raised:
        client(gateway).responses.create(
            model=request["model"], input=request["input"], stream=kind == "streaming"
        )
    assert raised.value.code == code


@needs_responses_fixtures
def test_an_error_event_mid_stream_ends_the_stream_with_the_responses_error_event(gateway, upstream):
    request, _ = replayed(upstream, "streaming", "stream_error", "streaming", content_type=SSE)
    seen = list(client(gateway).responses.create(model=request["model"], input=request["input"], stream=True))
    assert [event.type for event in seen] == [
        "response.created",
        "response.in_progress",
        "response.output_text.delta",
        "error",
    ]
    error = seen[-1]
    assert (error.code, error.message, error.sequence_number) == ("ERR_SOMETHING", "Something went wrong", 4)


@needs_responses_fixtures
def test_a_recorded_error_of_another_shape_still_ends_the_stream_as_an_error_event(gateway, upstream):
    request, _ = replayed(upstream, "streaming", "conversation", "streaming", content_type=SSE)
    seen = events(post(gateway, request).content)
    name, error = seen[-1]
    assert name == "error" and error["type"] == "error" and "not found" in error["message"]
    assert error["sequence_number"] == seen[-2][1]["sequence_number"] + 1


def numbered_on_to_the_error(seen: list[ResponseStreamEvent]) -> ResponseErrorEvent:
    """The stream's error event, checked: last, and numbered one after the event before it, as all are."""
    error = seen[-1]
    assert isinstance(error, ResponseErrorEvent) and len(seen) > 1
    assert [event.sequence_number for event in seen] == list(range(len(seen)))
    return error


def test_the_round_limit_error_event_is_numbered_on_from_the_last_event(tool_gateway, upstream):
    again = response_events("resp_loop", [TEXT, call(WORKSPACES)], 0, USAGE)
    model, scenario = upstream.scenario(sse_reply(as_sse(again)))
    seen = list(client(tool_gateway).responses.create(model=model, input="loop", stream=True))
    assert numbered_on_to_the_error(seen).code == "tool_round_limit"
    assert len(scenario.received) == 4


def test_a_cut_streams_error_event_is_numbered_on_from_the_last_event(gateway, upstream):
    sent = [event.data for event in response_events("resp_cut", [TEXT], 0, USAGE)]
    model, _ = upstream.scenario(SSEReply(sent, drop_after=3, done=False))
    seen = list(client(gateway).responses.create(model=model, input="cut", stream=True))
    numbered_on_to_the_error(seen)
    assert [event.type for event in seen[:-1]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]


def test_the_apis_worker_lost_error_event_is_numbered_on_from_the_last_event(make_gateway, upstream):
    doomed = make_gateway()
    sent = [event.data for event in response_events("resp_lost", [TEXT], 0, USAGE)]
    model, _ = upstream.scenario(SSEReply(sent, pause_after=2, pause=30))
    seen: list[ResponseStreamEvent] = []
    for event in client(doomed).responses.create(model=model, input="lost", stream=True):
        seen.append(event)
        if event.type == "response.in_progress" and doomed.workers[0].returncode is None:
            doomed.workers[0].kill()
            doomed.workers[0].wait(5)
    assert numbered_on_to_the_error(seen).code == "worker_timeout"


@needs_responses_fixtures
def test_a_failed_response_is_relayed_as_the_streams_end(gateway, upstream):
    request, _ = replayed(upstream, "streaming", "stream_failure", "streaming", content_type=SSE)
    response = post(gateway, request)
    (name, last) = events(response.content)[-1]
    assert name == "response.failed" and last["response"]["error"]["code"] == "server_error"


@needs_responses_fixtures
@pytest.mark.parametrize("streaming", [True, False])
def test_injected_tool_loop_over_two_rounds(tool_gateway, upstream, streaming):
    kind, key = ("streaming", "streaming") if streaming else ("blocking", "non-streaming")
    recorded = case(kind, "single_injected_tool")
    called = injected_name(recorded[key]).encode()
    first, second = (recorded[s].replace(called, WORKSPACES.encode()) for s in (key, f"{key}/tool-call"))
    model, scenario = upstream.scenario(
        as_reply(first, SSE if streaming else JSON), as_reply(second, SSE if streaming else JSON)
    )
    request = {**orjson.loads(recorded["request"]), "model": model, "stream": streaming}
    response = post(tool_gateway, request)
    assert response.status_code == 200
    assert len(scenario.received) == 2
    offered = [tool for tool in scenario.received[0].body["tools"] if tool["name"] == WORKSPACES]
    assert offered and offered[0]["type"] == "function" and offered[0]["strict"] is False
    *_, call, output = scenario.received[1].body["input"]
    assert call["type"] == "function_call" and call["name"] == WORKSPACES
    assert output["type"] == "function_call_output" and output["call_id"] == call["call_id"]
    assert "ws-1" in output["output"]  # what the MCP server's coder_list_workspaces answers
    first_id = (orjson.loads(first) if not streaming else data_of(sse(first)[0].lines)["response"])["id"]
    if streaming:
        seen = events(response.content)
        assert [name for name, _ in seen].count("response.created") == 1
        assert [data["sequence_number"] for _, data in seen] == list(range(len(seen)))
        name, final = seen[-1]
        assert name == "response.completed" and final["response"]["id"] == first_id
        assert all(data.get("item", {}).get("name") != WORKSPACES for _, data in seen)
        final = final["response"]
    else:
        final = response.json()
        assert final["id"] == first_id
    usages = [
        (orjson.loads(answer) if not streaming else data_of(sse(answer)[-1].lines)["response"])["usage"]
        for answer in (first, second)
    ]
    assert final["usage"]["input_tokens"] == sum(usage["input_tokens"] for usage in usages)
    assert WORKSPACES not in [item.get("name") for item in final["output"]]


def test_responses_the_gateway_did_not_create_pass_through(gateway, upstream):
    stored = {"id": "resp_elsewhere", "object": "response", "status": "completed", "output": []}
    upstream.passthrough_replies["/v1/responses/resp_elsewhere"] = RawReply(200, orjson.dumps(stored))
    assert client(gateway).responses.retrieve("resp_elsewhere").status == "completed"
    missing = httpx2.get(f"{gateway.url}/openai/v1/responses/resp_nowhere", timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
    assert upstream.passthrough_requests[-1].path == "/v1/responses/resp_nowhere"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/responses/resp_x"),
        ("GET", "/responses/resp_x/input_items?limit=2"),
        ("POST", "/responses/input_tokens"),
        ("POST", "/conversations"),
        ("GET", "/conversations/conv_1/items"),
        ("DELETE", "/conversations/conv_1"),
    ],
)
def test_what_the_gateway_does_not_own_goes_to_the_upstream_as_it_came(gateway, upstream, method, path):
    upstream_path = "/v1" + path.split("?")[0]
    upstream.passthrough_replies[upstream_path] = RawReply(200, b'{"ok": true}')
    body = b'{"model": "m", "input": "count me"}' if method == "POST" else None
    response = httpx2.request(method, f"{gateway.url}/openai/v1{path}", content=body, timeout=30)
    assert response.status_code == 200 and response.json() == {"ok": True}
    received = upstream.passthrough_requests[-1]
    assert received.path == "/v1" + path
    assert received.raw == (body or b"")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "hi"}, 400, "model"),
        ({"model": "m", "input": 7}, 400, "input"),
        ({"model": "m", "input": "hi", "tools": ["x"]}, 400, "tools"),
        ({"model": "m", "input": "hi", "stream": "yes"}, 400, "stream"),
        ({"model": "m", "input": "hi", "background": "yes"}, 400, "background"),
    ],
)
def test_bad_responses_requests_get_an_openai_error_naming_the_field(gateway, body, status, param):
    response = post(gateway, body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param


def test_the_sdk_streams_a_tool_loop_as_one_response_with_the_items_of_both_rounds(tool_gateway, upstream):
    """The SDK's accumulator indexes output items by ``output_index``: the second round's must follow the
    first round's items the client saw."""
    first = response_events("resp_first", [TEXT, call(WORKSPACES)], 0, USAGE)
    second = response_events("resp_second", [{**TEXT, "id": "msg_2"}], 0, USAGE)
    model, scenario = upstream.scenario(sse_reply(as_sse(first)), sse_reply(as_sse(second)))
    with client(tool_gateway).responses.stream(model=model, input="list them") as stream:
        seen = list(stream)
        final = stream.get_final_response()
    assert [item.id for item in final.output] == ["msg_1", "msg_2"]
    assert final.id == "resp_first" and final.usage.input_tokens == 200
    assert final.usage.input_tokens_details.cached_tokens == 80
    assert [event.sequence_number for event in seen] == list(range(len(seen)))
    assert len(scenario.received) == 2


def test_a_responses_stream_resumes_after_any_event(gateway, upstream):
    model, _ = upstream.scenario(sse_reply(as_sse(response_events("resp_r", [TEXT], 0, USAGE))))
    first = post(gateway, {"model": model, "input": "hi", "stream": True})
    resumed = gateway.resume("/openai/v1/responses", first, 2)
    assert resumed.status_code == 200
    assert events(resumed.content) == events(first.content)[3:]
