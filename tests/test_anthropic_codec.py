"""The Anthropic Messages codec replaying the recorded exchanges (../shared/fixtures/anthropic), streaming and
blocking, no process: what the client sees, what the next request holds, the token counts."""

from __future__ import annotations

import orjson
import pytest

from shared.families import Family, normalize_error
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from tests.anthropic_events import (
    INTERCEPTION_ID,
    MCP_RESULT,
    PING,
    WORKSPACES,
    client_view,
    codec_for,
    sse,
    stream_rounds,
)
from tests.fixtures import ANTHROPIC_FIXTURES, needs_anthropic_fixtures, read_txtar
from worker.codec import SseEvent, ToolCall, ToolResult

# --- the recorded exchanges ---------------------------------------------------------------------------------

FIXTURE_NAMES = sorted(path.stem for path in ANTHROPIC_FIXTURES.glob("*.txtar"))


def fixture(name: str) -> dict[str, bytes]:
    return read_txtar(ANTHROPIC_FIXTURES / f"{name}.txtar")


def message_cases(key: str) -> list[str]:
    return [name for name in FIXTURE_NAMES if "request" in fixture(name) and key in fixture(name)]


def is_http_answer(section: bytes) -> bool:
    return section.startswith(b"HTTP/")


@needs_anthropic_fixtures
def test_every_fixture_is_replayed_here():
    covered = set(message_cases("streaming")) | set(message_cases("non-streaming"))
    assert covered == {name for name in FIXTURE_NAMES if "request" in fixture(name)}
    assert "fallthrough" not in covered  # a passthrough case (GET /v1/models): no codec involved


@needs_anthropic_fixtures
@pytest.mark.parametrize("name", message_cases("streaming"))
def test_streaming_fixture(name):
    sections = fixture(name)
    body = orjson.loads(sections["request"])
    codec = codec_for(body, streaming=True)
    if is_http_answer(sections["streaming"]):
        error = sections["streaming"].partition(b"\n\n")[2].strip()
        # already Anthropic's shape: as the upstream sent it
        assert normalize_error(Family.ANTHROPIC_MESSAGES, 400, error) == error
        return
    first = sse(sections["streaming"])
    if any(upstream_event.name == "error" for upstream_event in first):
        with pytest.raises(UpstreamFailure) as failure:
            stream_rounds(codec, [first])
        assert failure.value.body == next(e.data for e in first if e.name == "error")
        assert failure.value.status == 500  # api_error
        return
    answers = [first] + ([sse(sections["streaming/tool-call"])] if "streaming/tool-call" in sections else [])
    relayed, rounds, requests = stream_rounds(codec, answers)
    view = client_view(relayed)
    assert requests[0]["stream"] is True
    assert requests[0]["tools"][0]["name"] == WORKSPACES.injected_name
    assert requests[0]["tools"][1:] == body.get("tools", [])
    assert not [d for d in view if d.get("content_block", {}).get("name", "").startswith("bmcp_")]
    starts = [orjson.loads(e.data)["message"]["usage"] for e in (a[0] for a in answers)]
    deltas = [orjson.loads(next(e.data for e in a if e.name == "message_delta"))["usage"] for a in answers]
    for current, start, delta in zip(rounds, starts, deltas, strict=True):
        assert current.usage == TokenCounts(
            input=start["input_tokens"],
            output=delta["output_tokens"],
            cache_read=start["cache_read_input_tokens"],
            cache_write=start["cache_creation_input_tokens"],
        )
    if len(answers) == 1:  # one round: every event but message_start (its id) as the upstream sent it, in
        # order but for pings, relayed at once while a client tool call is held until the round's end
        sent = [e.lines for e in first[1:]]
        assert [e for e in relayed[1:] if e != PING] == [e for e in sent if e != PING]
        assert relayed.count(PING) == sent.count(PING)
        assert relayed[0] == first[0].lines.replace(rounds[0].message_id.encode(), INTERCEPTION_ID.encode())
        assert rounds[0].client_calls() == upstream_tool_calls(first)
        return
    final_delta = next(d for d in view if d["type"] == "message_delta")
    assert final_delta["delta"]["stop_reason"] == "end_turn"
    assert final_delta["usage"]["output_tokens"] == sum(d["output_tokens"] for d in deltas)
    assert final_delta["usage"]["input_tokens"] == sum(s["input_tokens"] for s in starts)
    call = rounds[0].injected_calls()[0]
    assistant, results = requests[1]["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert {"type": "tool_use", "id": call.id, "name": call.name, "input": {"owner": "admin"}} in assistant[
        "content"
    ]
    assert results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": call.id,
                "content": MCP_RESULT["content"],
                "is_error": False,
            }
        ],
    }


def upstream_tool_calls(events: list[SseEvent]) -> list[ToolCall]:
    """The tool_use blocks of a streamed answer, their input as the input_json_delta parts spell it."""
    calls: dict[int, list] = {}
    for upstream_event in events:
        data = orjson.loads(upstream_event.data)
        if data["type"] == "content_block_start" and data["content_block"]["type"] == "tool_use":
            calls[data["index"]] = [data["content_block"]["id"], data["content_block"]["name"], ""]
        elif data["type"] == "content_block_delta" and data["index"] in calls:
            calls[data["index"]][2] += data["delta"].get("partial_json", "")
    return [ToolCall(*call) for call in calls.values()]


@needs_anthropic_fixtures
@pytest.mark.parametrize("name", message_cases("non-streaming"))
def test_blocking_fixture(name):
    sections = fixture(name)
    codec = codec_for(orjson.loads(sections["request"]), streaming=False)
    assert "stream" not in codec.request_body(streaming=False)
    if is_http_answer(sections["non-streaming"]):
        error = sections["non-streaming"].partition(b"\n\n")[2].strip()
        assert normalize_error(Family.ANTHROPIC_MESSAGES, 400, error) == error
        return
    answers = [sections["non-streaming"].strip()]
    if "non-streaming/tool-call" in sections:
        answers.append(sections["non-streaming/tool-call"].strip())
    usages = [orjson.loads(answer)["usage"] for answer in answers]
    for answer in answers:
        current = codec.new_round()
        current.take_body(answer)
        if calls := current.injected_calls():
            codec.continue_after(current, [ToolResult(call, MCP_RESULT, None) for call in calls])
    assert not current.injected_calls()
    assert current.usage == TokenCounts(
        input=usages[-1]["input_tokens"],
        output=usages[-1]["output_tokens"],
        cache_read=usages[-1]["cache_read_input_tokens"],
        cache_write=usages[-1]["cache_creation_input_tokens"],
    )
    final = codec.final_body(current)
    answer = orjson.loads(answers[-1])
    if len(answers) == 1:  # byte for byte but the id
        assert final == answers[0].replace(answer["id"].encode(), INTERCEPTION_ID.encode(), 1)
        return
    assert orjson.loads(final)["id"] == INTERCEPTION_ID
    assert orjson.loads(final)["content"] == answer["content"]
    usage = orjson.loads(final)["usage"]
    assert usage["input_tokens"] == sum(u["input_tokens"] for u in usages)
    assert usage["output_tokens"] == sum(u["output_tokens"] for u in usages)
    assert usage["service_tier"] == "standard"
    assistant = codec.request_body(streaming=False)["messages"][-2]
    assert assistant["content"][-1]["input"] == {"owner": "admin"}
