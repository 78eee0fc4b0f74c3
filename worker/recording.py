"""What one interception records, and when: as coder/aibridge's interceptors call their ``Recorder``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from shared.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    Outcome,
    PromptUsage,
    Recorder,
    TokenUsage,
    ToolUsage,
)
from shared.token_counts import TokenCounts
from worker.codec import ToolCall


def request_prompt(body: dict[str, Any]) -> str | None:
    """The prompt of a request: the last user message of its ``messages``, or of its Responses ``input``
    (a string is the prompt itself)."""
    prompt = body.get("messages") or body.get("input")
    if isinstance(prompt, str):
        return prompt
    return last_user_prompt(prompt if isinstance(prompt, list) else [])


def last_user_prompt(messages: list[Any]) -> str | None:
    """The text of the last user message: its string content, or its text parts joined by newlines."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                part.get("text")
                for part in content
                if isinstance(part, dict) and part.get("type") in ("text", "input_text")
            ]
            return "\n".join(text for text in texts if isinstance(text, str))
        return None
    return None


def parsed_arguments(arguments: str) -> Any:
    """Tool-call arguments as JSON when they parse, else the text as sent."""
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments


class InterceptionRecording:
    def __init__(self, recorder: Recorder, job: InterceptionJob) -> None:
        self._recorder = recorder
        self._job = job
        self._prompt = request_prompt(job.body)
        self._key_hint: str | None = None

    @property
    def _id(self) -> str:
        return self._job.interception_id

    def started(self) -> None:
        self._recorder.record(
            InterceptionStarted(
                interception_id=self._id,
                actor_id=self._job.actor_id,
                actor_metadata=self._job.actor_metadata,
                family=self._job.family,
                provider=self._job.provider,
                model=str(self._job.body.get("model")),
                streaming=self._job.streaming,
                user_agent=self._job.user_agent,
                client=self._job.client,
                session_id=self._job.session_id,
                started_at=datetime.fromtimestamp(self._job.enqueued_at, UTC),
            )
        )

    def round_ended(self, msg_id: str, usage: TokenCounts | None) -> None:
        """After each upstream round: the prompt (once, with the first round's message id), and the round's
        token usage if it reported any."""
        if self._prompt is not None:
            self._recorder.record(PromptUsage(interception_id=self._id, msg_id=msg_id, prompt=self._prompt))
            self._prompt = None
        if usage is not None:
            self._recorder.record(
                TokenUsage(
                    interception_id=self._id,
                    msg_id=msg_id,
                    input=usage.input,
                    output=usage.output,
                    cache_read_input=usage.cache_read,
                    cache_write_input=usage.cache_write,
                    extra=usage.extra,
                )
            )

    def thought(self, msg_id: str, text: str) -> None:
        """Text the model thought in the round of ``msg_id`` (one thinking block's)."""
        self._recorder.record(ModelThought(interception_id=self._id, msg_id=msg_id, content=text))

    def tool_called(
        self, msg_id: str, call: ToolCall, tool: McpTool | None, error: str | None = None
    ) -> None:
        """A tool call of the model's: run here when ``tool`` is one of the injected ones, else the client's."""
        self._recorder.record(
            ToolUsage(
                interception_id=self._id,
                msg_id=msg_id,
                tool_call_id=call.id,
                server_url=tool.server_url if tool else None,
                tool=tool.name if tool else call.name,
                args=parsed_arguments(call.arguments),
                injected=tool is not None,
                invocation_error=error,
            )
        )

    def key_used(self, hint: str) -> None:
        """An upstream call went with the central key of this (masked) hint."""
        self._key_hint = hint

    def ended(self, outcome: Outcome) -> None:
        self._recorder.record(
            InterceptionEnded(interception_id=self._id, outcome=outcome, key_hint=self._key_hint)
        )
