"""What the tool loop (worker/loop.py) asks of an API family: one Codec per interception, one Round per
upstream call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.families import Family
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from shared.token_counts import TokenCounts


@dataclass(frozen=True)
class SseEvent:
    """One upstream SSE event: its ``event:`` name (None when absent), its data (``data:`` lines joined by LF),
    and its lines as the upstream sent them (LF line ends, no ``id:`` lines, no trailing blank line)."""

    name: str | None
    data: bytes
    lines: bytes


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model wrote it


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    content: Any  # the MCP result as JSON-able data (as the chat path puts in the tool message)
    error: str | None  # set when the call failed (then content is {"error": True, "message": error})


class Round(Protocol):
    """The codec's reading of one upstream round."""

    message_id: str  # the upstream's message id ('' until known)
    usage: TokenCounts | None  # this round's, once reported
    thoughts: list[str]  # model thinking text, for the records (chat: none)

    def take(self, event: SseEvent) -> list[bytes]:
        """Read one streamed event; return the events to relay now (each as its lines, rewritten, no blank
        line, no id line: the API adds ``id:`` and the blank line). Raises UpstreamFailure for an error
        event or a malformed one."""
        ...

    def take_body(self, body: bytes) -> None:
        """Read a blocking answer's body (raises UpstreamFailure(502, ...) if malformed)."""
        ...

    def injected_calls(self) -> list[ToolCall]:
        """The gateway's own tool calls to run before the next round ([] if none, or if the round mixes
        them with client tools and the family cannot continue)."""
        ...

    def client_calls(self) -> list[ToolCall]:
        """Tool calls for the client (recorded, relayed as the upstream sent them)."""
        ...

    def closing_events(self) -> list[bytes]:
        """Events held back during the round that must reach the client because it is the last round
        (e.g. chat's ``[DONE]`` after a withheld tool round that turned out to end the answer; Anthropic's
        final message_delta with cumulative usage + message_stop)."""
        ...


class Codec(Protocol):
    """One API family's knowledge, for one interception (it holds the conversation across rounds)."""

    family: Family
    path: str  # upstream path, e.g. "/chat/completions", "/v1/messages"

    def is_stream_end(self, event: SseEvent) -> bool: ...

    def request_body(self, *, streaming: bool) -> dict[str, Any]:
        """The next upstream request: the conversation so far, the injected tools added (and, streaming,
        what the family needs: chat's stream_options.include_usage)."""
        ...

    def new_round(self) -> Round: ...

    def continue_after(self, round: Round, results: list[ToolResult]) -> None:
        """Append the round's assistant turn (Anthropic: thinking blocks with signatures included) and the
        tool results to the conversation."""
        ...

    def final_body(self, round: Round) -> bytes:
        """The blocking answer for the client: id = interception id, usage cumulative over the rounds."""
        ...

    def take_aliases(self) -> dict[str, str]:
        """Ids the client was shown that stand for another upstream id, learnt since the last call (shown id
        -> upstream id): what a later request naming the shown id continues from (Responses only)."""
        ...


CodecFactory = Callable[[InterceptionJob, list[McpTool]], Codec]
"""Builds a family's codec for one interception: ``(job, the injected tools)``."""
