"""The OpenAI Responses codec on the recorded exchanges (../shared/fixtures/openai/responses) and on events
written by hand, streaming and blocking, no process: what the client sees, what the next request holds, the
token counts."""

from __future__ import annotations

import orjson
import pytest

from shared.families import Family, error_event
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from tests.anthropic_events import sse
from tests.codec_driver import stream_rounds as drive
from tests.fixtures import RESPONSES_FIXTURES, needs_responses_fixtures, read_txtar
from tests.responses_events import REASONING, TEXT, USAGE, call, data_of, injected_name, response_events
from worker.codec import SseEvent, ToolResult
from worker.families.openai_responses import ResponsesCodec
from worker.families.responses_wire import token_counts
from worker.recording import request_prompt

MCP_RESULT = {"content": [{"type": "text", "text": "template docker"}]}


def tool(injected_name: str) -> McpTool:
    return McpTool(
        server="coder",
        server_url="http://mcp.test/mcp",
        name=injected_name.removeprefix("bmcp_coder_"),
        injected_name=injected_name,
        description="a coder tool",
        input_schema={"type": "object", "properties": {}},
    )


def codec_for(body: dict, streaming: bool, injected: str = "bmcp_coder_coder_list_workspaces"):
    job = InterceptionJob(
        interception_id="7f1e0c52-0000-4000-8000-000000000002",
        family=Family.OPENAI_RESPONSES,
        body=body,
        streaming=streaming,
        enqueued_at=0.0,
    )
    return ResponsesCodec(job, [tool(injected)])


def stream_rounds(codec, answers: list[list[SseEvent]]):
    """Drive the codec as the loop does, injected calls answered with MCP_RESULT (tests/codec_driver.py)."""
    return drive(codec, answers, MCP_RESULT)


def client_view(relayed: list[bytes]) -> list[dict]:
    """The client's parsed events, checked: event line = type, sequence numbers one apart, one
    response.created, output indices contiguous from 0."""
    parsed = [data for lines in relayed if (data := data_of(lines)) is not None]
    for lines, data in zip([r for r in relayed if data_of(r) is not None], parsed, strict=True):
        assert lines.startswith(b"event: " + data["type"].encode() + b"\n")
    sequence = [data["sequence_number"] for data in parsed]
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    assert [data["type"] for data in parsed].count("response.created") == 1
    added = [data["output_index"] for data in parsed if data["type"] == "response.output_item.added"]
    assert added == list(range(len(added)))
    return parsed


ERROR_ENDED = {"stream_error": "ERR_SOMETHING", "conversation": None}  # streams that end in an error event


def fixture(kind: str, name: str) -> dict[str, bytes]:
    return read_txtar(RESPONSES_FIXTURES / kind / f"{name}.txtar")


def names(kind: str, *, tool_rounds: bool) -> list[str]:
    if not RESPONSES_FIXTURES.is_dir():
        return []
    found = []
    for path in sorted((RESPONSES_FIXTURES / kind).glob("*.txtar")):
        sections = read_txtar(path)
        answer = sections.get("streaming" if kind == "streaming" else "non-streaming", b"")
        if answer.startswith(b"HTTP/") or path.stem in ERROR_ENDED:
            continue
        if any(key.endswith("/tool-call") for key in sections) == tool_rounds:
            found.append(path.stem)
    return found


@needs_responses_fixtures
@pytest.mark.parametrize("name", names("streaming", tool_rounds=False))
def test_a_recorded_stream_reaches_the_client_as_sent_but_its_sequence(name):
    sections = fixture("streaming", name)
    upstream = sse(sections["streaming"])
    relayed, (round_,), _ = stream_rounds(codec_for(orjson.loads(sections["request"]), True), [upstream])
    assert len(relayed) == len(upstream)
    numbered = [data for event in upstream if (data := data_of(event.lines)) is not None]
    contiguous = [n["sequence_number"] for n in numbered] == list(
        range(numbered[0]["sequence_number"], numbered[0]["sequence_number"] + len(numbered))
    )
    if contiguous:
        assert relayed == [event.lines for event in upstream]
    client_view(relayed)
    end = data_of(upstream[-1].lines)
    assert round_.message_id == end["response"]["id"]
    if usage := end["response"].get("usage"):
        assert round_.usage == token_counts(usage)


@needs_responses_fixtures
@pytest.mark.parametrize("name", names("blocking", tool_rounds=False))
def test_a_recorded_blocking_answer_reaches_the_client_byte_for_byte(name):
    sections = fixture("blocking", name)
    codec = codec_for(orjson.loads(sections["request"]), False)
    round_ = codec.new_round()
    try:
        round_.take_body(sections["non-streaming"])
    except UpstreamFailure as failure:
        assert failure.status == 502 and name == "wrong_response_format"
        return
    assert round_.injected_calls() == []
    assert codec.final_body(round_) == sections["non-streaming"]
    calls = [
        item for item in orjson.loads(sections["non-streaming"])["output"] if item["type"].endswith("_call")
    ]
    assert [(call.id, call.name) for call in round_.client_calls()] == [
        (item["call_id"], item["name"]) for item in calls
    ]


@needs_responses_fixtures
@pytest.mark.parametrize("name", names("streaming", tool_rounds=True))
def test_a_recorded_injected_tool_stream_is_one_response_to_the_client(name):
    sections = fixture("streaming", name)
    request = orjson.loads(sections["request"])
    injected = injected_name(sections["streaming"])
    first, second = sse(sections["streaming"]), sse(sections["streaming/tool-call"])
    relayed, rounds, requests = stream_rounds(codec_for(request, True, injected), [first, second])
    assert injected.encode() not in b"".join(relayed).split(b'"tools"')[0]
    seen = client_view(relayed)
    first_id = data_of(first[0].lines)["response"]["id"]
    assert {data["response"]["id"] for data in seen if "response" in data} == {first_id}
    ends = [data for data in seen if data["type"] == "response.completed"]
    assert len(ends) == 1
    usages = [data_of(events[-1].lines)["response"]["usage"] for events in (first, second)]
    assert ends[0]["response"]["usage"]["input_tokens"] == sum(u["input_tokens"] for u in usages)
    assert ends[0]["response"]["usage"]["output_tokens"] == sum(u["output_tokens"] for u in usages)
    assert rounds[0].usage + rounds[1].usage == token_counts(usages[0]) + token_counts(usages[1])
    assert [t["name"] for t in requests[0]["tools"]].count(injected) == 1
    *_, call, output = requests[1]["input"]
    assert call["type"] == "function_call" and call["name"] == injected
    assert output == {
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": orjson.dumps(MCP_RESULT).decode(),
    }


@needs_responses_fixtures
def test_a_recorded_blocking_tool_loop_answers_with_the_first_id_and_summed_usage():
    sections = fixture("blocking", "single_injected_tool")
    first, second = sections["non-streaming"], sections["non-streaming/tool-call"]
    codec = codec_for(orjson.loads(sections["request"]), False, injected_name(first))
    rounds = []
    for answer in (first, second):
        rounds.append(round_ := codec.new_round())
        round_.take_body(answer)
        if calls := round_.injected_calls():
            codec.continue_after(round_, [ToolResult(call, MCP_RESULT, None) for call in calls])
    assert len(rounds[0].injected_calls()) == 1 and rounds[1].injected_calls() == []
    final = orjson.loads(codec.final_body(rounds[1]))
    assert final["id"] == orjson.loads(first)["id"]
    shown = [item for item in orjson.loads(first)["output"] if item["type"] != "function_call"]
    assert final["output"] == [*shown, *orjson.loads(second)["output"]]
    usages = [orjson.loads(answer)["usage"] for answer in (first, second)]
    assert final["usage"]["total_tokens"] == sum(u["total_tokens"] for u in usages)
    body = codec.request_body(streaming=False)
    assert "stream" not in body and body["input"][-1]["type"] == "function_call_output"


@needs_responses_fixtures
@pytest.mark.parametrize("name", sorted(ERROR_ENDED))
def test_a_recorded_error_event_fails_the_round_after_what_came_before(name):
    sections = fixture("streaming", name)
    codec = codec_for(orjson.loads(sections["request"]), True)
    round_ = codec.new_round()
    events = sse(sections["streaming"])
    relayed = [lines for event in events[:-1] for lines in round_.take(event)]
    assert relayed == [event.lines for event in events[:-1]]
    with pytest.raises(UpstreamFailure) as failure:
        round_.take(events[-1])
    event = error_event(Family.OPENAI_RESPONSES, failure.value.body)
    assert event.startswith(b"event: error\ndata: ")
    said = data_of(events[-1].lines)
    sent = data_of(event)
    assert sent["type"] == "error" and sent["code"] == ERROR_ENDED[name]
    assert sent["message"] == (said.get("error") or said)["message"]
    assert sent["sequence_number"] == data_of(events[-2].lines)["sequence_number"] + 1


# --- by hand ------------------------------------------------------------------------------------------------


def test_a_tool_round_after_text_numbers_the_next_rounds_items_on_and_carries_reasoning():
    injected = "bmcp_coder_coder_list_workspaces"
    codec = codec_for({"model": "m", "input": "hi", "store": False}, True)
    first = response_events("resp_a", [REASONING, TEXT, call(injected)], 0, USAGE)
    second = response_events("resp_b", [{**TEXT, "id": "msg_2"}], 0, USAGE)
    relayed, rounds, requests = stream_rounds(codec, [first, second])
    seen = client_view(relayed)
    assert injected.encode() not in b"".join(relayed)
    completed = seen[-1]
    assert completed["type"] == "response.completed" and completed["response"]["id"] == "resp_a"
    assert [item["id"] for item in completed["response"]["output"]] == ["rs_1", "msg_1", "msg_2"]
    assert completed["response"]["usage"]["input_tokens_details"] == {"cached_tokens": 80}
    assert rounds[0].thoughts == ["think"]
    assert requests[1]["input"][0] == {"type": "message", "role": "user", "content": "hi"}
    assert requests[1]["input"][1] == REASONING  # its encrypted_content too
    assert requests[1]["input"][3]["name"] == injected
    assert requests[1]["store"] is False


@pytest.mark.parametrize("store", [False, True, None])
def test_without_store_only_reasoning_with_its_encrypted_content_is_carried_into_the_next_round(store):
    injected = "bmcp_coder_coder_list_workspaces"
    body = {"model": "m", "input": "hi"} | ({} if store is None else {"store": store})
    bare = {key: value for key, value in {**REASONING, "id": "rs_2"}.items() if key != "encrypted_content"}
    first = response_events("resp_a", [REASONING, bare, TEXT, call(injected)], 0, USAGE)
    second = response_events("resp_b", [{**TEXT, "id": "msg_2"}], 0, USAGE)
    _, _, requests = stream_rounds(codec_for(body, True), [first, second])
    carried = [item.get("id") for item in requests[1]["input"][1:]]
    kept = ["rs_1", "msg_1"] if store is False else ["rs_1", "rs_2", "msg_1"]
    assert carried == [*kept, "fc_call_1", None]  # the call, then its output
    assert requests[1]["input"][1] == REASONING


def test_a_round_mixing_gateway_and_client_calls_is_not_continued_and_its_end_relayed():
    codec = codec_for({"model": "m", "input": "hi"}, True)
    answer = response_events(
        "resp_a", [call("shell", "c1"), call("bmcp_coder_coder_list_workspaces")], 0, USAGE
    )
    relayed, rounds, _ = stream_rounds(codec, [answer])
    assert rounds[0].injected_calls() == [] and [c.name for c in rounds[0].client_calls()] == ["shell"]
    seen = client_view(relayed)
    assert [item["name"] for item in seen[-1]["response"]["output"]] == ["shell"]


def test_responses_usage_reads_as_token_counts_with_input_never_below_zero():
    assert token_counts(USAGE) == TokenCounts(
        input=60, output=10, cache_read=40, extra={"reasoning_tokens": 4}
    )
    odd = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 9}, "output_tokens": 1}
    assert token_counts(odd) == TokenCounts(input=0, output=1, cache_read=9)


def test_the_recorded_prompt_is_the_responses_input_string_or_its_last_user_message():
    assert request_prompt({"model": "m", "input": "tell me a joke"}) == "tell me a joke"
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
    ]
    assert request_prompt({"model": "m", "input": items}) == "a\nb"
    assert request_prompt({"model": "m", "messages": [{"role": "user", "content": "hi"}]}) == "hi"


def test_builtin_tool_calls_are_recorded_and_do_not_stop_a_gateway_tool_round():
    search = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"query": "aibridge"}}
    codec = codec_for({"model": "m", "input": "hi"}, True)
    answer = response_events("resp_a", [search, call("bmcp_coder_coder_list_workspaces")], 0, USAGE)
    _, rounds, requests = stream_rounds(codec, [answer, response_events("resp_b", [TEXT], 0, USAGE)])
    (recorded,) = rounds[0].client_calls()
    assert (recorded.id, recorded.name, orjson.loads(recorded.arguments)) == (
        "ws_1",
        "web_search",
        {"query": "aibridge"},
    )
    assert len(requests) == 2 and requests[1]["input"][1] == search
