"""One upstream round of an Anthropic Messages interception: its events relayed, withheld or held back, its
content blocks kept for the next request, its usage counted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from shared.token_counts import TokenCounts
from worker.codec import SseEvent, ToolCall
from worker.families.anthropic_wire import (
    block_param,
    malformed,
    patch_value,
    stream_error,
    token_counts,
    totals,
    with_data,
)
from worker.usage import add_usage


@dataclass
class Interception:
    """What the rounds of one interception share: the gateway's tool names, the id the client sees, usage so
    far, and what the client has been sent (message_start, how many content blocks)."""

    injected: frozenset[str]
    interception_id: str
    cumulative: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0
    started: bool = False
    next_index: int = 0

    def round_ended(self, usage: dict[str, Any]) -> None:
        self.cumulative = add_usage(self.cumulative, usage)
        self.rounds += 1


class Route(Enum):
    RELAY = "relay"  # to the client as it streams
    WITHHOLD = "withhold"  # the gateway's own tool call: never to the client
    HOLD = "hold"  # a client tool call (and what follows it) while the round may still call the gateway's


@dataclass
class Block:
    content: dict[str, Any]
    route: Route
    arguments: list[str] = field(default_factory=list)  # a tool call's input_json_delta parts
    client_index: int | None = None
    events: list[tuple[SseEvent, dict[str, Any]]] = field(default_factory=list)  # held ones

    def call(self) -> ToolCall:
        arguments = "".join(self.arguments) or orjson.dumps(self.content.get("input") or {}).decode()
        return ToolCall(str(self.content.get("id") or ""), str(self.content.get("name") or ""), arguments)

    def param(self) -> dict[str, Any] | None:
        return block_param(self.content, self.call().arguments)

    def is_tool_use(self) -> bool:
        return self.content.get("type") == "tool_use"


APPENDED_DELTAS = {"text_delta": "text", "thinking_delta": "thinking"}
REPLACING_DELTAS = {"signature_delta": "signature"}


class MessagesRound:
    def __init__(self, interception: Interception) -> None:
        self.message_id = ""
        self.usage: TokenCounts | None = None
        self.thoughts: list[str] = []
        self.body: dict[str, Any] | None = None
        self.raw_body = b""
        self._interception = interception
        self._raw_usage: dict[str, Any] = {}
        self._blocks: dict[int, Block] = {}
        self._holding = False
        self._end: list[tuple[SseEvent, dict[str, Any]]] = []  # message_delta, message_stop of a tool round
        self._handlers: dict[str, Callable[[SseEvent, dict[str, Any]], list[bytes]]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
        }

    def take(self, event: SseEvent) -> list[bytes]:
        try:
            parsed = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise malformed("event")
        kind = parsed.get("type")
        if kind == "error" or event.name == "error":
            raise stream_error(event.data, parsed)
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        return handler(event, parsed) if handler else [event.lines]  # ping, and types added later

    def take_body(self, body: bytes) -> None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        content = parsed.get("content") if isinstance(parsed, dict) else None
        if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
            raise malformed("message")
        self.body, self.raw_body = parsed, body
        self.message_id = str(parsed.get("id") or "")
        for index, block in enumerate(content):
            self._blocks[index] = Block(block, self._route(block))
            if block.get("type") == "thinking" and block.get("thinking"):
                self.thoughts.append(block["thinking"])
        self._add_usage(parsed.get("usage"))
        self._interception.round_ended(self._raw_usage)

    def injected_calls(self) -> list[ToolCall]:
        return [block.call() for block in self._blocks.values() if block.route is Route.WITHHOLD]

    def client_calls(self) -> list[ToolCall]:
        """The client's tool calls, unless the round also called the gateway's: then the model gets them back
        unrun (``deferred_calls``), and calls them again in a round of their own."""
        return [] if self.injected_calls() else self.deferred_calls()

    def deferred_calls(self) -> list[ToolCall]:
        return [
            block.call()
            for block in self._blocks.values()
            if block.is_tool_use() and block.route is not Route.WITHHOLD
        ]

    def closing_events(self) -> list[bytes]:
        """A tool round's held-back end (its client tool calls, message_delta with the usage so far,
        message_stop), when it is to be the last round after all."""
        end, self._end = self._end, []
        if not end:
            return []
        relayed = self._release_held()
        for event, parsed in end:
            relayed.append(
                self._final_delta(event, parsed) if parsed.get("type") == "message_delta" else event.lines
            )
        return relayed

    def assistant_turn(self) -> dict[str, Any]:
        content = [param for block in self._blocks.values() if (param := block.param()) is not None]
        return {"role": "assistant", "content": content}

    def _route(self, content: dict[str, Any]) -> Route:
        is_tool_use = content.get("type") == "tool_use"
        if is_tool_use and content.get("name") in self._interception.injected:
            return Route.WITHHOLD
        if self._holding or (is_tool_use and self._interception.injected):
            self._holding = True
            return Route.HOLD
        return Route.RELAY

    def _add_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw_usage.update((key, value) for key, value in usage.items() if value is not None)
            self.usage = token_counts(self._raw_usage)

    def _message_start(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        message = parsed.get("message")
        if not isinstance(message, dict):
            raise malformed("message_start event")
        self.message_id = str(message.get("id") or "")
        self._add_usage(message.get("usage"))
        if self._interception.started:
            return []  # the client's message started with the first round
        self._interception.started = True
        new_id = self._interception.interception_id
        expected = {**parsed, "message": {**message, "id": new_id}}
        return [with_data(event.lines, patch_value(event.data, expected, "id", message.get("id"), new_id))]

    def _block_start(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        index, content = parsed.get("index"), parsed.get("content_block")
        if not isinstance(index, int) or not isinstance(content, dict):
            raise malformed("content_block_start event")
        block = self._blocks[index] = Block(dict(content), self._route(content))
        return self._pass(block, event, parsed)

    def _block_delta(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        block = self._blocks.get(parsed.get("index"))
        if block is None:
            return [event.lines]
        delta = parsed.get("delta") or {}
        kind = delta.get("type")
        if kind in APPENDED_DELTAS:
            key = APPENDED_DELTAS[kind]
            block.content[key] = (block.content.get(key) or "") + str(delta.get(key) or "")
        elif kind in REPLACING_DELTAS:
            block.content[REPLACING_DELTAS[kind]] = delta.get(REPLACING_DELTAS[kind])
        elif kind == "input_json_delta":
            block.arguments.append(str(delta.get("partial_json") or ""))
        elif kind == "citations_delta":
            block.content["citations"] = [*(block.content.get("citations") or []), delta.get("citation")]
        return self._pass(block, event, parsed)

    def _block_stop(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        block = self._blocks.get(parsed.get("index"))
        if block is None:
            return [event.lines]
        if block.content.get("type") == "thinking" and block.content.get("thinking"):
            self.thoughts.append(block.content["thinking"])
        return self._pass(block, event, parsed)

    def _message_delta(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        self._add_usage(parsed.get("usage"))
        self._interception.round_ended(self._raw_usage)
        if self.injected_calls():
            self._end.append((event, parsed))
            return []
        return [*self._release_held(), self._final_delta(event, parsed)]

    def _message_stop(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        if self._end:
            self._end.append((event, parsed))
            return []
        return [event.lines]

    def _pass(self, block: Block, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        if block.route is Route.HOLD:
            block.events.append((event, parsed))
            return []
        return [] if block.route is Route.WITHHOLD else [self._renumbered(block, event, parsed)]

    def _release_held(self) -> list[bytes]:
        held = [block for block in self._blocks.values() if block.route is Route.HOLD]
        relayed = [self._renumbered(block, event, parsed) for block in held for event, parsed in block.events]
        for block in held:
            block.events.clear()
        return relayed

    def _renumbered(self, block: Block, event: SseEvent, parsed: dict[str, Any]) -> bytes:
        """The event with the index the client knows the block by: blocks are numbered in the order the client
        receives them, over all rounds."""
        if block.client_index is None:
            block.client_index = self._interception.next_index
            self._interception.next_index += 1
        index = parsed.get("index")
        if index == block.client_index:
            return event.lines
        expected = {**parsed, "index": block.client_index}
        return with_data(event.lines, patch_value(event.data, expected, "index", index, block.client_index))

    def _final_delta(self, event: SseEvent, parsed: dict[str, Any]) -> bytes:
        """The message_delta that ends the client's message: its usage the totals, once there were rounds
        before."""
        usage = parsed.get("usage")
        if self._interception.rounds < 2 or not isinstance(usage, dict):
            return event.lines
        summed = totals(usage, self._interception.cumulative)
        expected = {**parsed, "usage": summed}
        return with_data(event.lines, patch_value(event.data, expected, "usage", usage, summed))
