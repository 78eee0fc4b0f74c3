"""Background responses (Responses ``background: true``) served by the gateway itself, through real API and
worker processes, the official ``openai`` SDK as the client."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from tests.anthropic_upstream import sse_reply
from tests.background_replies import FINAL, text_reply, wait_for_status, words
from tests.responses_events import TEXT, USAGE, as_sse, call, response_events

WORKSPACES = "bmcp_coder_coder_list_workspaces"  # what the "coder" MCP server of tool_gateway offers


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key="unused", max_retries=0)


def test_a_background_response_is_queued_at_once_then_completes(gateway, upstream):
    model, scenario = upstream.scenario(text_reply(words(5), delay=0.05))
    sdk = client(gateway)
    queued = sdk.responses.create(model=model, input="hi", background=True, metadata={"k": "v"})
    assert queued.status == "queued" and queued.background is True and queued.metadata == {"k": "v"}
    assert queued.id.startswith("resp_") and queued.output == []
    final = wait_for_status(sdk, queued.id, FINAL)
    assert final.status == "completed" and final.id == queued.id and final.background is True
    assert final.output_text == "".join(words(5)) and final.usage.input_tokens == 100
    (received,) = scenario.received
    assert received.body["stream"] is True and "background" not in received.body  # streamed, not theirs


def test_a_background_stream_survives_its_client_and_resumes_after_a_sequence_number(gateway, upstream):
    model, _ = upstream.scenario(text_reply(words(30), delay=0.02))
    sdk = client(gateway)
    seen = []
    with sdk.responses.create(model=model, input="hi", background=True, stream=True) as stream:
        for event in stream:
            seen.append(event)
            if len(seen) == 6:
                break  # the connection is cut here
    response_id = seen[0].response.id
    assert seen[0].response.background is True and response_id.startswith("resp_")
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
    numbers = [event.sequence_number for event in seen + rest]
    assert numbers == list(range(len(numbers)))  # no gap, no duplicate
    assert rest[-1].type == "response.completed" and rest[-1].response.id == response_id
    text = "".join(event.delta for event in seen + rest if event.type == "response.output_text.delta")
    assert text == "".join(words(30)) == rest[-1].response.output_text
    replay = list(sdk.responses.retrieve(response_id, stream=True))  # after the end, within the retention
    assert [event.sequence_number for event in replay] == list(range(len(numbers)))
    assert wait_for_status(sdk, response_id, FINAL).status == "completed"


def test_cancel_stops_the_upstream_call_and_is_idempotent(gateway, upstream):
    model, scenario = upstream.scenario(text_reply(words(200), delay=0.05))
    sdk = client(gateway)
    queued = sdk.responses.create(model=model, input="hi", background=True)
    wait_for_status(sdk, queued.id, {"in_progress"})
    asked = time.monotonic()
    cancelled = sdk.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    deadline = asked + 1
    while scenario.received[0].connection_closed_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    closed_at = scenario.received[0].connection_closed_at
    assert closed_at is not None and closed_at - asked < 1, "the upstream call outlived the cancel by 1 s"
    assert sdk.responses.cancel(queued.id).status == "cancelled"
    assert sdk.responses.retrieve(queued.id).status == "cancelled"


def test_a_finished_response_is_not_cancelled(gateway, upstream):
    model, _ = upstream.scenario(text_reply(words(2)))
    sdk = client(gateway)
    queued = sdk.responses.create(model=model, input="hi", background=True)
    assert wait_for_status(sdk, queued.id, FINAL).status == "completed"
    assert sdk.responses.cancel(queued.id).status == "completed"


def test_unknown_gateway_response_ids_are_404_in_openai_shape(gateway):
    sdk = client(gateway)
    unknown = "resp_" + "0" * 32
    for ask in (
        lambda: sdk.responses.retrieve(unknown),
        lambda: sdk.responses.cancel(unknown),
        lambda: list(sdk.responses.retrieve(unknown, stream=True)),
    ):
        with pytest.raises(openai.NotFoundError) as raised:
            ask()
        assert raised.value.body["code"] == "not_found"


def test_starting_after_must_be_a_sequence_number(gateway, upstream):
    model, _ = upstream.scenario(text_reply(words(2)))
    queued = client(gateway).responses.create(model=model, input="hi", background=True)
    answer = httpx2.get(
        f"{gateway.url}/openai/v1/responses/{queued.id}", params={"stream": "true", "starting_after": "-1"}
    )
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_a_background_response_runs_an_injected_tool_over_two_rounds(tool_gateway, upstream):
    """The MCP tool loop in the background: the client sees one response under the gateway's id, with the
    items and usage of both rounds; the next request continues from the upstream's last response."""
    first = response_events("resp_up_1", [TEXT, call(WORKSPACES)], 0, USAGE)
    second = response_events("resp_up_2", [{**TEXT, "id": "msg_2"}], 0, USAGE)
    model, scenario = upstream.scenario(
        sse_reply(as_sse(first)), sse_reply(as_sse(second)), sse_reply(as_sse(second))
    )
    sdk = client(tool_gateway)
    queued = sdk.responses.create(model=model, input="list them", background=True)
    final = wait_for_status(sdk, queued.id, FINAL)
    assert final.status == "completed" and final.id == queued.id
    assert [item.id for item in final.output] == ["msg_1", "msg_2"] and final.usage.input_tokens == 200
    assert scenario.received[1].body["input"][-1]["type"] == "function_call_output"
    streamed = list(sdk.responses.retrieve(queued.id, stream=True))
    assert [event.sequence_number for event in streamed] == list(range(len(streamed)))
    assert {event.response.id for event in streamed if hasattr(event, "response")} == {queued.id}
    list(sdk.responses.create(model=model, input="and then?", previous_response_id=queued.id, stream=True))
    assert scenario.received[2].body["previous_response_id"] == "resp_up_2"
