"""Chat-completions chunks read, and rewritten so that every other byte stays as the upstream sent it; their
usage summed over rounds and read as TokenCounts."""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.errors import normalize_error_body
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure


def replace_id(raw: bytes, parsed: dict[str, Any], new_id_json: bytes) -> bytes:
    """``raw`` with its top-level ``id`` value replaced by ``new_id_json`` (an encoded JSON string).

    The upstream's id is matched as the first ``"id": <that value>`` in the text, so the rest stays
    byte-for-byte as sent; when the text cannot be matched that way the object is re-encoded (key order kept).
    """
    old_id = parsed.get("id")
    if not isinstance(old_id, str):
        return _reencode(parsed, {"id": orjson.loads(new_id_json)})
    encoded_old = orjson.dumps(old_id)
    compact = b'"id":' + encoded_old
    if compact in raw:  # how OpenAI and most providers write it
        return raw.replace(compact, b'"id":' + new_id_json, 1)
    pattern = re.compile(rb'"id"\s*:\s*' + re.escape(encoded_old))
    patched, count = pattern.subn(b'"id":' + new_id_json, raw, count=1)
    if count:
        return patched
    return _reencode(parsed, {"id": orjson.loads(new_id_json)})


def replace_id_and_usage(parsed: dict[str, Any], new_id_json: bytes, usage: dict[str, Any]) -> bytes:
    return _reencode(parsed, {"id": orjson.loads(new_id_json), "usage": usage})


def _reencode(parsed: dict[str, Any], replacements: dict[str, Any]) -> bytes:
    return orjson.dumps({**parsed, **replacements})


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` as a JSON object; UpstreamFailure (502) saying the upstream sent a malformed ``what`` if not."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamFailure(502, normalize_error_body(data, f"the upstream sent a malformed {what}"))
    return parsed


def parse_chunk(data: bytes) -> dict[str, Any]:
    """The chunk as an object; raises UpstreamFailure with what to tell the client for a malformed chunk
    (502) or an error the upstream sent in place of one (500)."""
    chunk = json_object(data, "chunk")
    if "error" in chunk:
        raise UpstreamFailure(500, normalize_error_body(data, "the upstream reported an error"))
    return chunk


def token_counts(usage: dict[str, Any]) -> TokenCounts:
    """A chat ``usage`` object as TokenCounts: ``prompt_tokens`` less the cached ones (clamped at 0: some
    providers report more cached than prompt tokens), the details' other counts as ``extra``."""
    prompt_details = _details(usage, "prompt_tokens_details")
    completion_details = _details(usage, "completion_tokens_details")
    cached = _count(prompt_details, "cached_tokens")
    return TokenCounts(
        input=max(0, _count(usage, "prompt_tokens") - cached),
        output=_count(usage, "completion_tokens"),
        cache_read=cached,
        extra={
            "prompt_audio": _count(prompt_details, "audio_tokens"),
            "prompt_cached": cached,
            "completion_accepted_prediction": _count(completion_details, "accepted_prediction_tokens"),
            "completion_rejected_prediction": _count(completion_details, "rejected_prediction_tokens"),
            "completion_audio": _count(completion_details, "audio_tokens"),
            "completion_reasoning": _count(completion_details, "reasoning_tokens"),
        },
    )


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def _count(counts: dict[str, Any], key: str) -> int:
    """An integer count, 0 when absent, null or not a number."""
    value = counts.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
