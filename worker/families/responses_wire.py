"""OpenAI Responses wire details: the injected tools as Responses tools, usage as TokenCounts, the upstream's
failures, and events rewritten so that every byte but the changed values stays as the upstream sent it."""

from __future__ import annotations

from typing import Any

import orjson

from shared.families import Family, error_body
from shared.mcp.tools import McpTool
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from worker.codec import SseEvent, ToolCall, ToolResult
from worker.families.anthropic_wire import patch_value, with_data

STREAM_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete"})
CALL_ITEMS = {"function_call": "arguments", "custom_tool_call": "input"}  # calls the client runs


def responses_tool(tool: McpTool) -> dict[str, Any]:
    """An injected MCP tool as a Responses ``function`` tool (its schema as chat's, not strict)."""
    function = tool.as_openai_tool()["function"]
    return {"type": "function", **function, "strict": False}


def json_object(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def malformed(what: str) -> UpstreamFailure:
    message = f"the upstream sent a malformed {what}"
    return UpstreamFailure(502, error_body(Family.OPENAI_RESPONSES, 502, message, "upstream_error", None))


def stream_error(parsed: dict[str, Any], sequence_number: int | None) -> UpstreamFailure:
    """An upstream ``error`` event (its error at the top, or under ``error``) as the failure the loop reports:
    OpenAI's error body, with the sequence number the client's error event is to carry."""
    said = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
    error = {
        "message": said.get("message") or "the upstream reported an error",
        "type": said.get("type") if said is not parsed and said.get("type") else "upstream_error",
        "code": said.get("code"),
        "param": said.get("param"),
    }
    body: dict[str, Any] = {"error": error}
    if sequence_number is not None:
        body["sequence_number"] = sequence_number
    return UpstreamFailure(500, orjson.dumps(body))


def token_counts(usage: dict[str, Any]) -> TokenCounts:
    """A Responses ``usage`` object as TokenCounts: ``input_tokens`` less the cached ones (clamped at 0), the
    reasoning tokens as ``extra``."""
    cached = _count(_details(usage, "input_tokens_details"), "cached_tokens")
    reasoning = _count(_details(usage, "output_tokens_details"), "reasoning_tokens")
    return TokenCounts(
        input=max(0, _count(usage, "input_tokens") - cached),
        output=_count(usage, "output_tokens"),
        cache_read=cached,
        extra={"reasoning_tokens": reasoning} if reasoning else {},
    )


def tool_call(item: dict[str, Any]) -> ToolCall:
    arguments = item.get(CALL_ITEMS.get(str(item.get("type")), "arguments"))
    return ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""), str(arguments or ""))


def is_builtin_call(item: dict[str, Any]) -> bool:
    """A call of a tool the provider runs itself (``web_search_call``, ``file_search_call``, ...)."""
    kind = item.get("type")
    return isinstance(kind, str) and kind.endswith("_call") and kind not in CALL_ITEMS


def builtin_call(item: dict[str, Any]) -> ToolCall:
    """A built-in tool's call as the records take it: named by its tool, its action (or the item) as input."""
    name = str(item["type"]).removesuffix("_call")
    details = item.get("action") or {key: value for key, value in item.items() if key not in ("id", "type")}
    return ToolCall(str(item.get("id") or ""), name, orjson.dumps(details).decode())


def function_call_output(result: ToolResult) -> dict[str, Any]:
    output = result.error if result.error is not None else orjson.dumps(result.content).decode()
    return {"type": "function_call_output", "call_id": result.call.id, "output": output}


def reasoning_summaries(item: dict[str, Any]) -> list[str]:
    """The summary texts of a ``reasoning`` output item (the model's thoughts, for the records)."""
    if item.get("type") != "reasoning" or not isinstance(item.get("summary"), list):
        return []
    return [part["text"] for part in item["summary"] if isinstance(part, dict) and part.get("text")]


def rewritten(
    event: SseEvent, parsed: dict[str, Any], changes: dict[str, Any], response_changes: dict[str, Any]
) -> bytes:
    """The event with the top-level values in ``changes`` written anew, and those in ``response_changes`` in
    its response object (if it has one), the rest as the upstream sent it."""
    data, expected = event.data, dict(parsed)
    for key, value in changes.items():
        data, expected = _changed(data, expected, key, value)
    response = expected.get("response")
    if isinstance(response, dict):
        for key, value in response_changes.items():
            if response.get(key) != value:
                old, response = response.get(key), {**response, key: value}
                expected["response"] = response
                data = patch_value(data, expected, key, old, value)
    return event.lines if data is event.data else with_data(event.lines, data)


def _changed(data: bytes, expected: dict[str, Any], key: str, value: Any) -> tuple[bytes, dict[str, Any]]:
    if expected.get(key) == value:
        return data, expected
    old = expected.get(key)
    expected = {**expected, key: value}
    return patch_value(data, expected, key, old, value), expected


def reencoded(event: SseEvent, expected: dict[str, Any]) -> bytes:
    return with_data(event.lines, orjson.dumps(expected))


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def _count(counts: dict[str, Any], key: str) -> int:
    value = counts.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
