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
    Outcome,
    PromptUsage,
    Recorder,
    TokenUsage,
    ToolUsage,
)
from worker.assistant import ToolCall


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
                part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"
            ]
            return "\n".join(text for text in texts if isinstance(text, str))
        return None
    return None


def token_usage(interception_id: str, msg_id: str, usage: dict[str, Any]) -> TokenUsage:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = int(prompt_details.get("cached_tokens") or 0)
    return TokenUsage(
        interception_id=interception_id,
        msg_id=msg_id,
        input=max(0, int(usage.get("prompt_tokens") or 0) - cached),  # some providers report more cached
        output=int(usage.get("completion_tokens") or 0),
        cache_read_input=cached,
        extra={
            "prompt_audio": int(prompt_details.get("audio_tokens") or 0),
            "prompt_cached": cached,
            "completion_accepted_prediction": int(completion_details.get("accepted_prediction_tokens") or 0),
            "completion_rejected_prediction": int(completion_details.get("rejected_prediction_tokens") or 0),
            "completion_audio": int(completion_details.get("audio_tokens") or 0),
            "completion_reasoning": int(completion_details.get("reasoning_tokens") or 0),
        },
    )


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
        self._prompt = last_user_prompt(job.body.get("messages") or [])

    @property
    def _id(self) -> str:
        return self._job.interception_id

    def started(self) -> None:
        self._recorder.record(
            InterceptionStarted(
                interception_id=self._id,
                actor_id=self._job.actor_id,
                actor_metadata=self._job.actor_metadata,
                provider=self._job.provider,
                model=str(self._job.body.get("model")),
                streaming=self._job.streaming,
                user_agent=self._job.user_agent,
                started_at=datetime.fromtimestamp(self._job.enqueued_at, UTC),
            )
        )

    def round_ended(self, msg_id: str, usage: dict[str, Any] | None) -> None:
        """After each upstream round: the prompt (once, with the first round's message id), and the round's
        token usage if it reported any."""
        if self._prompt is not None:
            self._recorder.record(PromptUsage(interception_id=self._id, msg_id=msg_id, prompt=self._prompt))
            self._prompt = None
        if usage is not None:
            self._recorder.record(token_usage(self._id, msg_id, usage))

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

    def ended(self, outcome: Outcome) -> None:
        self._recorder.record(InterceptionEnded(interception_id=self._id, outcome=outcome))
