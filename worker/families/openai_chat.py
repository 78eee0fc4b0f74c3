"""The OpenAI chat-completions codec: the request with the injected tools, each streamed chunk relayed with
its id rewritten to the interception's (a round withheld from its first gateway tool call on), usage
cumulative over the rounds, and the conversation continued with the tool results."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from shared.families import Family
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from shared.sse import data_field
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from worker.codec import Round, SseEvent, ToolCall, ToolResult
from worker.families.chat_chunks import (
    json_object,
    parse_chunk,
    replace_id,
    replace_id_and_usage,
    token_counts,
)
from worker.families.chat_message import AssistantMessage
from worker.usage import add_usage

logger = logging.getLogger(__name__)

END = b"[DONE]"
END_EVENT = data_field(END)


def is_done(event: SseEvent) -> bool:
    """A chat-completions stream ends with a ``[DONE]`` event."""
    return event.data == END


class ChatRound:
    """One chat-completions upstream call: its assistant message, and whether it is withheld from the
    client (streamed: from the first delta that starts a gateway tool call on; its ``[DONE]`` too)."""

    def __init__(self, codec: ChatCodec) -> None:
        self._codec = codec
        self.message = AssistantMessage()
        self.thoughts: list[str] = []
        self.completion: dict[str, Any] = {}
        self.raw = b""
        self._withheld = False
        self._blocking = False
        self._calls: tuple[list[ToolCall], list[ToolCall]] | None = None

    @property
    def message_id(self) -> str:
        return self.message.msg_id

    @property
    def usage(self) -> TokenCounts | None:
        return None if self.message.usage is None else token_counts(self.message.usage)

    def take(self, event: SseEvent) -> list[bytes]:
        data = event.data
        if data == END:
            return [] if self._withheld else [END_EVENT]
        try:
            chunk = parse_chunk(data)
        except UpstreamFailure:
            logger.warning("interception %s: bad upstream chunk", self._codec.interception_id)
            raise
        message = self.message
        message.msg_id = message.msg_id or str(chunk.get("id") or "")
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # counted even in a withheld chunk: some providers put it there
            message.usage = usage
            self._codec.add_usage(usage)
        if choices := chunk.get("choices"):
            delta = choices[0].get("delta") or {}
            message.add_delta(delta)
            self._withheld = self._withheld or self._codec.starts_injected_call(delta)
            if self._withheld:
                return []
        elif isinstance(usage, dict) and (self._withheld or not self._codec.usage_asked):
            return []  # a usage chunk: for a client that asked, once (a tool round's adds to the answer's)
        return [data_field(self._codec.rewrite(data, chunk))]

    def take_body(self, body: bytes) -> None:
        completion = json_object(body, "completion")
        self.completion, self.raw, self._blocking = completion, body, True
        self.message.add_completion(completion)
        if self.message.usage is not None:
            self._codec.add_usage(self.message.usage)

    def injected_calls(self) -> list[ToolCall]:
        return self._split_calls()[0]

    def client_calls(self) -> list[ToolCall]:
        return self._split_calls()[1]

    def closing_events(self) -> list[bytes]:
        return [END_EVENT] if self._withheld else []

    def _split_calls(self) -> tuple[list[ToolCall], list[ToolCall]]:
        """The round's tool calls as (the gateway's to run, the client's): all of them the client's in a
        stream that relayed them (not withheld); none at all for a round that mixes both (it cannot continue, and its client
        calls were withheld with the gateway's)."""
        if self._calls is None:
            calls = self.message.tool_calls
            foreign = [call.name for call in calls if not self._codec.is_injected(call.name)]
            if not (self._withheld or self._blocking) or len(foreign) == len(calls):
                self._calls = [], calls
            elif foreign:
                logger.warning(
                    "interception %s: gateway tools called together with client tools %s; not continuing",
                    self._codec.interception_id,
                    foreign,
                )
                self._calls = [], []
            else:
                self._calls = calls, []
        return self._calls


class ChatCodec:
    family = Family.OPENAI_CHAT
    path = "/chat/completions"
    is_stream_end = staticmethod(is_done)

    def __init__(self, job: InterceptionJob, tools: list[McpTool]) -> None:
        self.interception_id = job.interception_id
        self._body = job.body
        self._injected = frozenset(tool.injected_name for tool in tools)
        self._offered = [tool.as_openai_tool() for tool in tools]
        self._messages: list[Any] = list(job.body.get("messages") or [])
        self._id_json = orjson.dumps(job.interception_id)
        self._cumulative_usage: dict[str, Any] = {}
        self._rounds = 0
        self.usage_asked = (job.body.get("stream_options") or {}).get("include_usage") is True

    def request_body(self, *, streaming: bool) -> dict[str, Any]:
        body = {**self._body, "messages": self._messages}
        if self._offered:
            body["tools"] = [*(body.get("tools") or []), *self._offered]
        if streaming:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            body["n"] = 1
        return body

    def new_round(self) -> ChatRound:
        self._rounds += 1
        return ChatRound(self)

    def continue_after(self, round: Round, results: list[ToolResult]) -> None:
        self._messages.append(_chat(round).message.as_request_message())
        self._messages.extend(
            {"role": "tool", "tool_call_id": result.call.id, "content": orjson.dumps(result.content).decode()}
            for result in results
        )

    def final_body(self, round: Round) -> bytes:
        chat_round = _chat(round)
        if self._rounds > 1 and self._cumulative_usage:
            return replace_id_and_usage(chat_round.completion, self._id_json, self._cumulative_usage)
        return replace_id(chat_round.raw, chat_round.completion, self._id_json)

    def take_aliases(self) -> dict[str, str]:
        return {}  # the client gets the interception's id, never one to continue from

    def is_injected(self, name: str) -> bool:
        return name in self._injected

    def starts_injected_call(self, delta: dict[str, Any]) -> bool:
        calls = delta.get("tool_calls")
        if not calls:
            return False
        return ((calls[0].get("function") or {}).get("name") or "").strip() in self._injected

    def add_usage(self, usage: dict[str, Any]) -> None:
        self._cumulative_usage = add_usage(self._cumulative_usage, usage)

    def rewrite(self, data: bytes, chunk: dict[str, Any]) -> bytes:
        """A relayed chunk's data: the interception's id, and the cumulative usage in a usage chunk."""
        if isinstance(chunk.get("usage"), dict):
            return replace_id_and_usage(chunk, self._id_json, self._cumulative_usage)
        return replace_id(data, chunk, self._id_json)


def _chat(round: Round) -> ChatRound:
    if not isinstance(round, ChatRound):
        raise TypeError(f"the chat codec reads its own rounds, not {type(round).__name__}")
    return round
