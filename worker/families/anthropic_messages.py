"""The Anthropic Messages family (``POST /v1/messages``): the Codec the tool loop drives for one interception."""

from __future__ import annotations

from typing import Any

import orjson

from shared.families import Family
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from worker.codec import Round, SseEvent, ToolResult
from worker.families.anthropic_round import Interception, MessagesRound
from worker.families.anthropic_wire import (
    SUMMED_USAGE,
    deferred_result_block,
    malformed,
    patch_value,
    tool_result_block,
    totals,
)

PATH = "/v1/messages"
STREAM_END = "message_stop"


def anthropic_tool(tool: McpTool) -> dict[str, Any]:
    """An injected MCP tool as a Messages API tool."""
    return {
        "name": tool.injected_name,
        "description": tool.description or "",
        "input_schema": {"type": "object", **tool.input_schema},
    }


class AnthropicMessagesCodec:
    """The conversation of one interception and how its rounds read and rewrite Anthropic's events.

    The client sees one message: the first round's ``message_start`` (its id the interception's), the content
    blocks of every round numbered on from the ones before, the gateway's own ``tool_use`` blocks left out,
    and the last round's end with the usage summed over the rounds. A round that calls the gateway's tools
    together with the client's runs the gateway's; the client's go back to the model marked not run (the
    Messages API wants a result for every tool_use), so that it calls them again in a round the client sees.
    """

    family = Family.ANTHROPIC_MESSAGES
    path = PATH

    def __init__(self, job: InterceptionJob, tools: list[McpTool]) -> None:
        self._job = job
        self._tools = [anthropic_tool(tool) for tool in tools]
        self._messages: list[Any] = list(job.body.get("messages") or [])
        self._interception = Interception(
            injected=frozenset(tool.injected_name for tool in tools), interception_id=job.interception_id
        )

    def is_stream_end(self, event: SseEvent) -> bool:
        if event.name is not None:
            return event.name == STREAM_END
        try:
            parsed = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(parsed, dict) and parsed.get("type") == STREAM_END

    def request_body(self, *, streaming: bool) -> dict[str, Any]:
        body = {**self._job.body, "messages": self._messages}
        if self._tools:  # ahead of the client's, so that its cache breakpoints still cover every tool
            body["tools"] = [*self._tools, *(body.get("tools") or [])]
        if streaming:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    def new_round(self) -> MessagesRound:
        return MessagesRound(self._interception)

    def continue_after(self, round: Round, results: list[ToolResult]) -> None:
        messages_round = _own(round)
        deferred = [deferred_result_block(call) for call in messages_round.deferred_calls()]
        self._messages.append(messages_round.assistant_turn())
        self._messages.append({"role": "user", "content": [*map(tool_result_block, results), *deferred]})

    def final_body(self, round: Round) -> bytes:
        messages_round = _own(round)
        body = messages_round.body
        if body is None:
            raise malformed("message")
        new_id = self._interception.interception_id
        named = {**body, "id": new_id}
        answer = patch_value(messages_round.raw_body, named, "id", body.get("id"), new_id)
        usage = body.get("usage")
        if self._interception.rounds < 2 or not isinstance(usage, dict):
            return answer
        summed = totals(usage, self._interception.cumulative, (*SUMMED_USAGE, "cache_creation"))
        return patch_value(answer, {**named, "usage": summed}, "usage", usage, summed)

    def take_aliases(self) -> dict[str, str]:
        return {}  # the client gets the interception's id, never one to continue from


def _own(round: Round) -> MessagesRound:
    if not isinstance(round, MessagesRound):
        raise TypeError(f"not a round of this codec: {type(round).__name__}")
    return round
