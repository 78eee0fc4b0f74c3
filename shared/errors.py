"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

from typing import Any

import orjson


def error_object(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


def error_body(message: str, type_: str, code: str | None = None) -> bytes:
    return orjson.dumps(error_object(message, type_, code))


def normalize_error_body(raw: bytes, fallback_message: str) -> bytes:
    """The upstream's error body if it is OpenAI-shaped (with ``message``, ``type`` and ``code`` present),
    otherwise an OpenAI-shaped body that carries what the upstream said."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if "message" in error and "type" in error and "code" in error:
            return raw
        normalized = {"message": fallback_message, "type": "upstream_error", "code": None, **error}
        return orjson.dumps({**parsed, "error": normalized})
    text = raw[:512].decode("utf-8", "replace").strip()
    detail = f"{fallback_message}: {text}" if text else fallback_message
    return error_body(detail, "upstream_error")


def prefix_message(body: bytes, prefix: str) -> bytes:
    """An OpenAI-shaped error ``body`` (as normalize_error_body makes it) whose message starts with ``prefix``
    and goes on with the message it had."""
    parsed = orjson.loads(body)
    error = parsed["error"]
    said = error.get("message")
    error["message"] = f"{prefix}; the upstream said: {said}" if said else prefix
    return orjson.dumps(parsed)
