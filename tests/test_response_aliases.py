"""``previous_response_id`` of a response id the gateway showed in place of the upstream's: after gateway tool
rounds (the client saw the first round's id) and after a background response (the client saw the gateway's
id), the upstream gets its own latest response id; any other id goes upstream as it came. Real API and worker
processes, the fake upstream, the official ``openai`` SDK."""

from __future__ import annotations

import uuid

import openai
import orjson
import pytest

from tests.background_replies import FINAL, text_reply, wait_for_status, words
from tests.fake_upstream import RawReply, SSEReply
from tests.responses_events import TEXT, USAGE, call, response_events

WORKSPACES = "bmcp_coder_coder_list_workspaces"  # what the "coder" MCP server of tool_gateway offers


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def upstream_id(name: str) -> str:
    return f"resp_up_{name}_{uuid.uuid4().hex[:12]}"  # unique: the suite's tests share one Redis


def answer(response_id: str, items: list[dict], streaming: bool) -> SSEReply | RawReply:
    """The upstream's answer of one round: its events, or its body."""
    if streaming:
        sent = [event.data for event in response_events(response_id, items, 0, USAGE)]
        return SSEReply(sent, done=False)
    body = {"id": response_id, "object": "response", "status": "completed", "output": items, "usage": USAGE}
    return RawReply(200, orjson.dumps(body))


def continued_upstream(gateway, upstream, previous: str, background: bool = False) -> str | None:
    """The ``previous_response_id`` the upstream got for a request continuing from ``previous``."""
    echoed = {"previous_response_id": "resp_as_the_upstream_got_it"}
    model, scenario = upstream.scenario(text_reply(words(3), response_id=upstream_id("next"), echoed=echoed))
    sdk = client(gateway)
    if background:
        made = sdk.responses.create(
            model=model, input="and then?", previous_response_id=previous, background=True
        )
        assert made.previous_response_id == previous  # the client's own id, echoed
        final = wait_for_status(sdk, made.id, FINAL)
        assert final.status == "completed"
    else:
        seen = list(
            sdk.responses.create(model=model, input="and then?", previous_response_id=previous, stream=True)
        )
        assert seen[-1].type == "response.completed"
        final = seen[-1].response
    (received,) = scenario.received
    if (
        received.body.get("previous_response_id") != previous
    ):  # the client sees its own id, not the upstream's
        assert final.previous_response_id == previous
    return received.body.get("previous_response_id")


@pytest.mark.parametrize("streaming", [True, False])
def test_after_gateway_tool_rounds_the_upstream_gets_the_last_rounds_id(tool_gateway, upstream, streaming):
    first, second = upstream_id("first"), upstream_id("second")
    model, scenario = upstream.scenario(
        answer(first, [TEXT, call(WORKSPACES)], streaming),
        answer(second, [{**TEXT, "id": "msg_2"}], streaming),
    )
    sdk = client(tool_gateway)
    if streaming:
        with sdk.responses.stream(model=model, input="list them") as stream:
            shown = stream.get_final_response()
    else:
        shown = sdk.responses.create(model=model, input="list them")
    assert len(scenario.received) == 2 and shown.id == first
    assert [item.id for item in shown.output] == ["msg_1", "msg_2"]
    assert continued_upstream(tool_gateway, upstream, shown.id) == second


def test_after_a_background_response_the_upstream_gets_its_own_id(gateway, upstream):
    own = upstream_id("background")
    model, _ = upstream.scenario(text_reply(words(3), response_id=own))
    sdk = client(gateway)
    queued = sdk.responses.create(model=model, input="hi", background=True)
    assert queued.id != own and wait_for_status(sdk, queued.id, FINAL).status == "completed"
    assert continued_upstream(gateway, upstream, queued.id) == own
    assert continued_upstream(gateway, upstream, queued.id, background=True) == own


def test_a_background_id_is_resolvable_as_soon_as_the_client_sees_it(gateway, upstream):
    own = upstream_id("early")
    model, _ = upstream.scenario(text_reply(words(40), delay=0.05, response_id=own))
    sdk = client(gateway)
    with sdk.responses.create(model=model, input="hi", background=True, stream=True) as stream:
        opened = next(iter(stream))  # the connection is cut here; the job goes on
    assert opened.type == "response.created" and opened.response.id != own
    assert sdk.responses.retrieve(opened.response.id).status == "in_progress"
    assert continued_upstream(gateway, upstream, opened.response.id) == own


def test_a_background_response_over_tool_rounds_stands_for_the_last_round(tool_gateway, upstream):
    first, second = upstream_id("bg_first"), upstream_id("bg_second")
    model, scenario = upstream.scenario(
        answer(first, [TEXT, call(WORKSPACES)], streaming=True),
        answer(second, [{**TEXT, "id": "msg_2"}], streaming=True),
    )
    sdk = client(tool_gateway)
    queued = sdk.responses.create(model=model, input="list them", background=True)
    final = wait_for_status(sdk, queued.id, FINAL)
    assert final.status == "completed" and final.id == queued.id and len(scenario.received) == 2
    assert continued_upstream(tool_gateway, upstream, queued.id) == second


@pytest.mark.parametrize("form", ["the provider's", "the gateway's"])
def test_an_id_the_gateway_never_aliased_goes_upstream_unchanged(gateway, upstream, form):
    previous = (
        f"resp_up_never_{uuid.uuid4().hex[:12]}" if form == "the provider's" else f"resp_{uuid.uuid4().hex}"
    )
    assert continued_upstream(gateway, upstream, previous) == previous


def test_a_single_rounds_id_is_the_upstreams_own_and_goes_upstream_unchanged(gateway, upstream):
    own = upstream_id("single")
    model, _ = upstream.scenario(text_reply(words(3), response_id=own))
    seen = list(client(gateway).responses.create(model=model, input="hi", stream=True))
    assert seen[-1].response.id == own
    assert continued_upstream(gateway, upstream, own) == own
