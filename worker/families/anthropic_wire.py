"""Anthropic Messages wire details: error bodies, usage, event rewriting that keeps the upstream's bytes, and the
content blocks that go back upstream (the assistant turn and the tool results)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.families import ANTHROPIC_STATUS_BY_TYPE, Family, error_body, normalize_error
from shared.sse import data_field
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from worker.codec import ToolCall, ToolResult

SUMMED_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "server_tool_use",
)
"""The usage fields that are totals over the rounds in what the client sees (the final message_delta, the
blocking answer); a blocking answer's ``cache_creation`` breakdown too."""

DEFERRED_CALL = (
    "Not run: this call came together with calls to the gateway's own tools, which ran first. "
    "Call this tool again if you still need it."
)


def malformed(what: str) -> UpstreamFailure:
    message = f"the upstream sent a malformed {what}"
    return UpstreamFailure(502, error_body(Family.ANTHROPIC_MESSAGES, 502, message, "upstream_error", None))


def stream_error(data: bytes, parsed: dict[str, Any]) -> UpstreamFailure:
    """An ``error`` event, as the failure the loop reports (the status its type stands for)."""
    error = parsed.get("error")
    type_ = error.get("type") if isinstance(error, dict) else None
    status = ANTHROPIC_STATUS_BY_TYPE.get(type_, 500) if isinstance(type_, str) else 500
    return UpstreamFailure(status, normalize_error(Family.ANTHROPIC_MESSAGES, status, data))


def token_counts(usage: dict[str, Any]) -> TokenCounts:
    """Anthropic's usage object as TokenCounts (its ``input_tokens`` already exclude the cached ones)."""
    server_tools = usage.get("server_tool_use")
    extra = {
        name: count
        for name, count in (server_tools.items() if isinstance(server_tools, dict) else ())
        if isinstance(count, int) and count > 0
    }
    return TokenCounts(
        input=_count(usage, "input_tokens"),
        output=_count(usage, "output_tokens"),
        cache_read=_count(usage, "cache_read_input_tokens"),
        cache_write=_count(usage, "cache_creation_input_tokens"),
        extra=extra,
    )


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value > 0 else 0


def totals(
    usage: dict[str, Any], cumulative: dict[str, Any], keys: tuple[str, ...] = SUMMED_USAGE
) -> dict[str, Any]:
    """``usage`` with the summed fields' values taken from ``cumulative``."""
    return {**usage, **{key: cumulative[key] for key in keys if key in cumulative}}


def patch_value(raw: bytes, expected: dict[str, Any], key: str, old: Any, new: Any) -> bytes:
    """``raw`` (the JSON text of an object) with the value of the first ``"key": old`` written ``new``, if that
    gives ``expected``; otherwise ``expected`` encoded anew."""
    pattern = re.compile(b'("' + re.escape(key.encode()) + rb'"\s*:\s*)' + re.escape(orjson.dumps(old)))
    value = orjson.dumps(new)
    candidate, count = pattern.subn(lambda match: match.group(1) + value, raw, count=1)
    if count and orjson.loads(candidate) == expected:
        return candidate
    return orjson.dumps(expected)


def with_data(lines: bytes, data: bytes) -> bytes:
    """An event's lines with its ``data:`` lines replaced by ``data``; its other lines kept in place."""
    kept: list[bytes] = []
    placed = False
    for line in lines.split(b"\n"):
        if not line.startswith(b"data:"):
            kept.append(line)
        elif not placed:
            kept.append(data_field(data))
            placed = True
    if not placed:
        kept.append(data_field(data))
    return b"\n".join(kept)


def block_param(block: dict[str, Any], arguments: str) -> dict[str, Any] | None:
    """A response content block as the request accepts it back (None for an empty text block, which the API
    rejects); ``arguments``, a tool call's input as JSON text."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text") or ""
        citations = block.get("citations")
        return (
            ({"type": "text", "text": text} | ({"citations": citations} if citations else {}))
            if text
            else None
        )
    if kind == "thinking":
        return {
            "type": "thinking",
            "thinking": block.get("thinking") or "",
            "signature": block.get("signature") or "",
        }
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data") or ""}
    if kind in ("tool_use", "server_tool_use"):
        return {
            "type": kind,
            "id": block.get("id"),
            "name": block.get("name"),
            "input": parsed_input(arguments),
        }
    return block


def parsed_input(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_result_block(result: ToolResult) -> dict[str, Any]:
    if result.error is not None:
        content: list[dict[str, Any]] = [{"type": "text", "text": result.error}]
    else:
        content = mcp_content(result.content)
    return {
        "type": "tool_result",
        "tool_use_id": result.call.id,
        "content": content,
        "is_error": result.error is not None,
    }


def deferred_result_block(call: ToolCall) -> dict[str, Any]:
    """The result of a client tool call the gateway hands back to the model instead of the client."""
    return {"type": "tool_result", "tool_use_id": call.id, "content": DEFERRED_CALL, "is_error": True}


def mcp_content(result: Any) -> list[dict[str, Any]]:
    """An MCP ``CallToolResult`` (wire shape) as tool_result content: text and images as such, anything else
    as its JSON text."""
    items = result.get("content") if isinstance(result, dict) else None
    blocks = [_mcp_item(item) for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    if blocks:
        return blocks
    structured = result.get("structuredContent") if isinstance(result, dict) else None
    return [{"type": "text", "text": orjson.dumps(structured if structured is not None else result).decode()}]


def _mcp_item(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("type") == "text" and isinstance(item.get("text"), str):
        return {"type": "text", "text": item["text"]}
    if item.get("type") == "image" and isinstance(item.get("data"), str):
        source = {"type": "base64", "media_type": item.get("mimeType"), "data": item["data"]}
        return {"type": "image", "source": source}
    resource = item.get("resource")
    if (
        item.get("type") == "resource"
        and isinstance(resource, dict)
        and isinstance(resource.get("text"), str)
    ):
        return {
            "type": "text",
            "text": f"Resource {resource.get('uri')} ({resource.get('mimeType')}): {resource['text']}",
        }
    return {"type": "text", "text": orjson.dumps(item).decode()}
