"""One upstream round of an OpenAI Responses interception: its events relayed (renumbered), withheld or held
back, its output items kept for the next request, its usage counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from shared.token_counts import TokenCounts
from worker.codec import SseEvent, ToolCall
from worker.families.responses_wire import (
    CALL_ITEMS,
    STREAM_ENDS,
    builtin_call,
    is_builtin_call,
    json_object,
    malformed,
    reasoning_summaries,
    reencoded,
    rewritten,
    stream_error,
    token_counts,
    tool_call,
)
from worker.usage import add_usage

logger = logging.getLogger(__name__)

OPENING_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})


@dataclass
class Item:
    body: dict[str, Any]
    withheld: bool  # the gateway's own tool call
    client_index: int | None = None


@dataclass
class Interception:
    """What the rounds of one interception share: what the client has been sent, and usage so far."""

    injected: frozenset[str]
    response_id: str | None = None  # the id the client knows the response by
    background: bool = False  # the client's response is a background one (its objects say so)
    shown_previous: str | None = None  # the previous_response_id the client sent, when another went upstream
    next_sequence: int | None = None
    next_index: int = 0
    shown: list[dict[str, Any]] = field(default_factory=list)  # output items of the rounds before, as shown
    cumulative: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0
    aliases: dict[str, str] = field(default_factory=dict)  # learnt, not yet taken: shown id -> upstream id

    def response_changes(self) -> dict[str, Any]:
        """What the response objects the client sees have that the upstream's do not."""
        changes: dict[str, Any] = {"id": self.response_id} if self.response_id else {}
        if self.shown_previous is not None:
            changes["previous_response_id"] = self.shown_previous
        return {**changes, "background": True} if self.background else changes

    def learn(self, upstream_id: str) -> None:
        """The upstream id of a round: the client's response id stands for it if they differ."""
        self.response_id = self.response_id or upstream_id
        if upstream_id and upstream_id != self.response_id:
            self.aliases[self.response_id] = upstream_id


class ResponsesRound:
    def __init__(self, interception: Interception) -> None:
        self.message_id = ""
        self.usage: TokenCounts | None = None
        self.thoughts: list[str] = []
        self.response: dict[str, Any] | None = None
        self.raw_body = b""
        self._interception = interception
        self._items: dict[int, Item] = {}
        self._held: tuple[SseEvent, dict[str, Any]] | None = None  # a tool round's end
        self._injected: list[ToolCall] | None = None  # known once the round ended

    def take(self, event: SseEvent) -> list[bytes]:
        parsed = json_object(event.data)
        if parsed is None:
            return [event.lines]  # relayed as received: the client's SDK judges it
        kind = parsed.get("type")
        if kind == "error" or event.name == "error":
            raise stream_error(parsed, self._interception.next_sequence)
        response = parsed.get("response")
        if isinstance(response, dict) and not self.message_id:
            self.message_id = str(response.get("id") or "")
            self._interception.learn(self.message_id)
        if kind in OPENING_EVENTS:
            if self._interception.rounds:
                return []  # the client's response opened with the first round
            return [self._relayed(event, parsed)]
        if kind in STREAM_ENDS:
            return self._end(event, parsed)
        index = parsed.get("output_index")
        item = parsed.get("item")
        if isinstance(index, int) and isinstance(item, dict):  # output_item.added, output_item.done
            self._items.setdefault(index, Item(item, self._is_injected(item))).body = item
            if kind == "response.output_item.done":
                self.thoughts.extend(reasoning_summaries(item))
        known = self._items.get(index) if isinstance(index, int) else None
        if known is None:
            return [self._relayed(event, parsed)]
        if known.withheld:
            return []
        if known.client_index is None:
            known.client_index = self._interception.next_index
            self._interception.next_index += 1
        return [self._relayed(event, parsed, output_index=known.client_index)]

    def take_body(self, body: bytes) -> None:
        parsed = json_object(body)
        output = parsed.get("output") if parsed is not None else None
        if parsed is None or not isinstance(output, list) or not all(isinstance(i, dict) for i in output):
            raise malformed("response")
        self.raw_body = body
        self._interception.learn(str(parsed.get("id") or ""))
        for index, item in enumerate(output):
            self._items[index] = Item(item, self._is_injected(item))
            self.thoughts.extend(reasoning_summaries(item))
        self._ended(parsed)

    def injected_calls(self) -> list[ToolCall]:
        """The gateway's calls to run; none for a round that calls the client's tools too (the client gets
        its calls, the round ends the response)."""
        if self._injected is None:
            self._injected = [tool_call(item.body) for item in self._items.values() if item.withheld]
            if self._injected and self._client_run_calls():
                logger.warning(
                    "gateway tools called together with client tools in response %s; not continuing",
                    self.message_id,
                )
                self._injected = []
        return self._injected

    def client_calls(self) -> list[ToolCall]:
        """The calls of the client's tools (for the records): those it runs, and the provider's built-ins."""
        builtins = [builtin_call(item.body) for item in self._items.values() if is_builtin_call(item.body)]
        return [*self._client_run_calls(), *builtins]

    def _client_run_calls(self) -> list[ToolCall]:
        return [
            tool_call(item.body)
            for item in self._items.values()
            if not item.withheld and item.body.get("type") in CALL_ITEMS
        ]

    def closing_events(self) -> list[bytes]:
        held, self._held = self._held, None
        return [] if held is None else [self._final(*held)]

    def output_items(self) -> list[dict[str, Any]]:
        """Every output item of the round, the withheld ones too (as the next round's input needs them)."""
        return [item.body for _, item in sorted(self._items.items())]

    def shown_items(self) -> list[dict[str, Any]]:
        return [item.body for _, item in sorted(self._items.items()) if not item.withheld]

    def final_response(self) -> dict[str, Any]:
        """The response the client gets at the end: the first round's id, every round's shown output, the
        usage summed over the rounds."""
        response = self.response or {}
        final = {**response, **self._interception.response_changes()}
        final["output"] = [*self._interception.shown, *self.shown_items()]
        if self._interception.cumulative:
            final["usage"] = self._interception.cumulative
        return final

    def _is_injected(self, item: dict[str, Any]) -> bool:
        return item.get("type") == "function_call" and item.get("name") in self._interception.injected

    def changed(self) -> bool:
        """Whether what the client is to get differs from this round's own answer."""
        shared = self._interception
        return shared.rounds > 1 or shared.background or any(item.withheld for item in self._items.values())

    def _ended(self, response: dict[str, Any]) -> None:
        self.response = response
        self.message_id = self.message_id or str(response.get("id") or "")
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = token_counts(usage)
            self._interception.cumulative = add_usage(self._interception.cumulative, usage)
        self._interception.rounds += 1

    def _end(self, event: SseEvent, parsed: dict[str, Any]) -> list[bytes]:
        response = parsed.get("response")
        if not isinstance(response, dict):
            raise malformed(f"{parsed.get('type')} event")
        self._ended(response)
        if self.injected_calls():
            self._held = (event, parsed)
            return []
        return [self._final(event, parsed)]

    def _final(self, event: SseEvent, parsed: dict[str, Any]) -> bytes:
        if not self.changed():
            return self._relayed(event, parsed)
        return self._relayed(event, {**parsed, "response": self.final_response()}, reencode=True)

    def _relayed(
        self, event: SseEvent, parsed: dict[str, Any], output_index: int | None = None, reencode: bool = False
    ) -> bytes:
        """The event as the client is to see it: the next sequence number, the client's output index, the
        client's response id."""
        changes: dict[str, Any] = {}
        sequence = parsed.get("sequence_number")
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            shared = self._interception
            shared.next_sequence = sequence if shared.next_sequence is None else shared.next_sequence
            changes["sequence_number"] = shared.next_sequence
            shared.next_sequence += 1
        if output_index is not None:
            changes["output_index"] = output_index
        if reencode:
            return reencoded(event, {**parsed, **changes})
        return rewritten(event, parsed, changes, self._interception.response_changes())
