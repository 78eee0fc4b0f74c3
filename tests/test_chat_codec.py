"""The chat-completions codec on its own (no process started): what a round relays, withholds and hands the
loop, on the recorded fixtures' bytes and on hand-written events."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from shared.families import Family, error_body, normalize_error
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from tests.fixtures import CHAT_FIXTURES, needs_fixtures, read_txtar
from worker.codec import ToolCall, ToolResult
from worker.families import CODECS
from worker.families.openai_chat import ChatCodec, ChatRound
from worker.sse import iter_sse_batches

INTERCEPTION = "ic-1"
LIST_WORKSPACES = McpTool(
    server="coder",
    server_url="http://mcp.test/coder",
    name="coder_list_workspaces",
    injected_name="bmcp_coder_coder_list_workspaces",
    description="list workspaces",
    input_schema={"type": "object", "properties": {"owner": {"type": "string"}}, "required": ["owner"]},
)
NO_EXTRA = {
    "prompt_audio": 0,
    "prompt_cached": 0,
    "completion_accepted_prediction": 0,
    "completion_rejected_prediction": 0,
    "completion_audio": 0,
    "completion_reasoning": 0,
}


def codec(
    body: dict, *, streaming: bool = True, tools: tuple[McpTool, ...] = (LIST_WORKSPACES,)
) -> ChatCodec:
    job = InterceptionJob(interception_id=INTERCEPTION, body=body, streaming=streaming, enqueued_at=0)
    made = CODECS[job.family](job, list(tools))
    assert isinstance(made, ChatCodec)
    return made


def relay(chat: ChatCodec, raw: bytes) -> tuple[ChatRound, list[bytes]]:
    """One streamed round of ``raw`` (received at once, read by the worker's SSE reader): the round and what
    it relayed."""
    round = chat.new_round()

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        reader.feed_data(raw)
        reader.feed_eof()
        return [
            out
            async for batch in iter_sse_batches(reader, chat.is_stream_end)
            for e in batch
            for out in round.take(e)
        ]

    return round, asyncio.run(run())


def chunk_of(relayed_event: bytes) -> dict:
    assert relayed_event.startswith(b"data: ")
    return orjson.loads(relayed_event[len(b"data: ") :])


def data(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def tool_result(call: ToolCall) -> ToolResult:
    return ToolResult(call, {"content": [{"type": "text", "text": "bob"}]}, None)


@needs_fixtures
def test_a_streamed_injected_tool_round_relays_only_its_text_and_hands_the_call_to_the_loop():
    sections = read_txtar(CHAT_FIXTURES / "single_injected_tool.txtar")
    chat = codec(orjson.loads(sections["request"]))
    first, relayed = relay(chat, sections["streaming"])
    chunks = [chunk_of(event) for event in relayed]
    assert {chunk["id"] for chunk in chunks} == {INTERCEPTION}
    assert all("tool_calls" not in chunk["choices"][0]["delta"] for chunk in chunks)
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks).endswith("IDs.\n\n")
    assert b"data: [DONE]" not in relayed  # a tool round's end is not the answer's
    (call,) = first.injected_calls()
    assert call == ToolCall(
        "call_0TxntkwDB66KH8z4RwNqeWrZ", LIST_WORKSPACES.injected_name, '{"owner":"admin"}'
    )
    assert first.client_calls() == []
    assert first.message_id == "chatcmpl-C1WTooFaxeQgtyLB1kg53t41aB0NV"
    assert first.usage == TokenCounts(input=4862, output=45, extra=NO_EXTRA)

    chat.continue_after(first, [tool_result(call)])
    body = chat.request_body(streaming=True)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == LIST_WORKSPACES.injected_name
    assert orjson.loads(body["messages"][2]["content"]) == {"content": [{"type": "text", "text": "bob"}]}
    assert body["tools"] == [LIST_WORKSPACES.as_openai_tool()]
    assert (body["stream"], body["stream_options"], body["n"]) == (True, {"include_usage": True}, 1)

    second, relayed = relay(chat, sections["streaming/tool-call"])
    assert relayed[-1] == b"data: [DONE]"
    assert not any(b'"usage":{' in event for event in relayed)  # the client did not ask for usage
    assert second.injected_calls() == second.client_calls() == second.closing_events() == []


@needs_fixtures
def test_a_client_that_asked_for_usage_gets_one_usage_chunk_summed_over_the_rounds():
    sections = read_txtar(CHAT_FIXTURES / "streaming_injected_tool_nonzero_index.txtar")
    chat = codec(orjson.loads(sections["request"]))
    first, relayed = relay(chat, sections["streaming"])
    assert not any(b'"usage":{' in event for event in relayed)  # the tool round's usage chunk is withheld
    (call,) = first.injected_calls()  # its index 1 leaves no empty call at 0
    assert call.id == "toolu_vrtx_01DbFqUgk6aAtJ4nDBqzFWDF"
    assert first.usage == TokenCounts(
        input=25939 - 25429, output=58, cache_read=25429, extra={**NO_EXTRA, "prompt_cached": 25429}
    )
    chat.continue_after(first, [tool_result(call)])
    second, relayed = relay(chat, sections["streaming/tool-call"])
    (usage_chunk,) = [chunk_of(event) for event in relayed if b'"usage":{' in event]
    assert usage_chunk["id"] == INTERCEPTION
    assert usage_chunk["usage"] == {
        "completion_tokens": 58 + 39,
        "prompt_tokens": 25939 + 26166,
        "prompt_tokens_details": {"cached_tokens": 25429 + 25934},
        "total_tokens": 25997 + 26205,
    }
    assert second.usage == TokenCounts(
        input=26166 - 25934, output=39, cache_read=25934, extra={**NO_EXTRA, "prompt_cached": 25934}
    )


@needs_fixtures
def test_a_blocking_tool_loop_answers_with_the_interception_id_and_the_summed_usage():
    sections = read_txtar(CHAT_FIXTURES / "single_injected_tool.txtar")
    chat = codec(orjson.loads(sections["request"]), streaming=False)
    assert "stream_options" not in chat.request_body(streaming=False)
    first = chat.new_round()
    first.take_body(sections["non-streaming"])
    (call,) = first.injected_calls()
    chat.continue_after(first, [tool_result(call)])
    second = chat.new_round()
    second.take_body(sections["non-streaming/tool-call"])
    assert second.injected_calls() == []
    answer = orjson.loads(chat.final_body(second))
    assert answer["id"] == INTERCEPTION
    assert answer["choices"][0]["message"]["content"].startswith("Here is the list")
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["total_tokens"]) == (4862 + 5049, 4914 + 5119)
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 4864


def test_one_round_keeps_the_upstream_bytes_but_the_id():
    chat = codec({"messages": []}, streaming=False)
    raw = b'{"id":"up-1", "choices":[{"message":{"content":"hi"}}],  "usage":{"prompt_tokens":3}}'
    round = chat.new_round()
    round.take_body(raw)
    assert chat.final_body(round) == raw.replace(b'"up-1"', b'"ic-1"')


def test_a_round_of_client_tools_is_relayed_whole_and_its_calls_are_the_clients():
    chat = codec({"messages": []})
    raw = (
        data(
            {
                "id": "u",
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "ls"}}]}}
                ],
            }
        )
        + data(
            {
                "id": "u",
                "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}],
            }
        )
        + b"data: [DONE]\n\n"
    )
    round, relayed = relay(chat, raw)
    assert len(relayed) == 3 and relayed[-1] == b"data: [DONE]"
    assert round.client_calls() == [ToolCall("c1", "ls", "{}")]
    assert round.injected_calls() == round.closing_events() == []


def test_a_round_mixing_gateway_and_client_tools_stops_and_releases_its_held_end():
    chat = codec({"messages": []})
    calls = [
        {"index": 0, "id": "g1", "function": {"name": LIST_WORKSPACES.injected_name, "arguments": "{}"}},
        {"index": 1, "id": "c1", "function": {"name": "ls", "arguments": "{}"}},
    ]
    raw = data({"id": "u", "choices": [{"delta": {"content": "on it"}}]})
    raw += data({"id": "u", "choices": [{"delta": {"tool_calls": calls}}]}) + b"data: [DONE]\n\n"
    round, relayed = relay(chat, raw)
    assert [chunk_of(event)["choices"][0]["delta"] for event in relayed] == [{"content": "on it"}]
    assert round.injected_calls() == round.client_calls() == []
    assert round.closing_events() == [b"data: [DONE]"]


@pytest.mark.parametrize(
    ("event", "status"),
    [(b"data: {not json", 502), (b"data: [1]", 502), (b'data: {"error":{"message":"overloaded"}}', 500)],
)
def test_a_malformed_or_error_chunk_fails_the_round(event, status):
    chat = codec({"messages": []})
    with pytest.raises(UpstreamFailure) as failure:
        relay(chat, event + b"\n\n")
    assert failure.value.status == status
    assert "message" in orjson.loads(failure.value.body)["error"]


def test_chat_usage_reads_as_token_counts_with_input_never_below_zero():
    chat = codec({"messages": []})
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 25, "audio_tokens": None},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    round, relayed = relay(chat, data({"id": "u", "choices": [], "usage": usage}) + b"data: [DONE]\n\n")
    assert relayed == [b"data: [DONE]"]  # a usage chunk, not asked for
    assert round.usage == TokenCounts(
        input=0, output=4, cache_read=25, extra={**NO_EXTRA, "prompt_cached": 25, "completion_reasoning": 3}
    )


def test_errors_are_openai_shaped():
    chat = Family.OPENAI_CHAT
    shaped = b'{"error":{"message":"slow down","type":"rate_limit","code":"rl"}}'
    assert normalize_error(chat, 429, shaped) == shaped
    assert orjson.loads(normalize_error(chat, 502, b"Bad Gateway"))["error"]["message"] == (
        "upstream answered 502: Bad Gateway"
    )
    assert orjson.loads(error_body(chat, 500, "stopped", "server_error", "tool_round_limit")) == {
        "error": {"message": "stopped", "type": "server_error", "code": "tool_round_limit", "param": None}
    }
