"""The chat-completions assistant message of one upstream round, rebuilt from streamed deltas or read from a
completion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.codec import ToolCall


@dataclass
class AssistantMessage:
    """The message of one upstream round: its id and usage, its content, and its tool calls by index
    (accumulated from streamed ``choices[0].delta`` objects, or read from a blocking completion)."""

    msg_id: str = ""
    usage: dict[str, Any] | None = None
    content: list[str] = field(default_factory=list)
    _calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add_delta(self, delta: dict[str, Any]) -> None:
        if isinstance(text := delta.get("content"), str):
            self.content.append(text)
        for call_delta in delta.get("tool_calls") or ():
            call = self._calls.setdefault(call_delta.get("index", 0), {"id": "", "name": "", "arguments": ""})
            if call_delta.get("id"):
                call["id"] = call_delta["id"]
            function = call_delta.get("function") or {}
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""

    def add_completion(self, completion: dict[str, Any]) -> None:
        """Read a blocking completion: its id, usage, and the first choice's message."""
        self.msg_id = str(completion.get("id") or "")
        if isinstance(usage := completion.get("usage"), dict):
            self.usage = usage
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        if isinstance(message.get("content"), str):
            self.content.append(message["content"])
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            self._calls[index] = {
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "arguments": function.get("arguments") or "",
            }

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls in index order, without entries that have no id.

        Providers sometimes start tool-call indices above zero; the gaps are not calls.
        """
        return [
            ToolCall(call["id"], call["name"].strip(), call["arguments"])
            for _, call in sorted(self._calls.items())
            if call["id"]
        ]

    def as_request_message(self) -> dict[str, Any]:
        """The message to append to the conversation before the tool results."""
        return {
            "role": "assistant",
            "content": "".join(self.content) or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ],
        }
