"""Codex CLI (``codex exec``) run against a given OpenAI base URL, and the Responses streams the fake upstream
answers it with. The binary: AIBRIDGE_TEST_CODEX (``.ci/run`` installs one there), the usual install folders,
or ``codex`` on PATH."""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.fake_upstream import RawReply

KEY_VARIABLE = "AIBRIDGE_CODEX_KEY"


@dataclass
class CodexRun:
    returncode: int
    events: list[dict[str, Any]]  # the --json lines
    stdout: str
    stderr: str

    def answer(self) -> str | None:
        """The text of the last agent message Codex printed."""
        messages = [
            event["item"]["text"]
            for event in self.events
            if event.get("type") == "item.completed" and event["item"].get("type") == "agent_message"
        ]
        return messages[-1] if messages else None


def write_config(home: Path, base_url: str, model: str) -> None:
    """A ``config.toml`` in ``home`` (CODEX_HOME) sending ``model`` to ``base_url``, with no retries."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "gw"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "read-only"\n'
        "check_for_update_on_startup = false\n"
        "[model_providers.gw]\n"
        'name = "aibridge"\n'
        f'base_url = "{base_url}"\n'
        f'env_key = "{KEY_VARIABLE}"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def run_codex(
    binary: str, base_url: str, model: str, home: Path, prompt: str, *, key: str = "sk-client-unused"
) -> CodexRun:
    """``codex exec --json`` with ``prompt``, its CODEX_HOME and working folder under ``home``."""
    codex_home, workdir = home / "codex-home", home / "work"
    write_config(codex_home, base_url, model)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        KEY_VARIABLE: key,
        "RUST_LOG": "error",
    }
    done = subprocess.run(
        [binary, "exec", "--json", "--skip-git-repo-check", "--cd", str(workdir), prompt],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return CodexRun(done.returncode, [orjson.loads(line) for line in lines], done.stdout, done.stderr)


def _response(response_id: str, status: str, output: list[dict], usage: dict | None) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1767874658,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": "gpt-test",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        "metadata": {},
    }


def _events(response_id: str, items: list[tuple[dict, list[dict]]], usage: dict) -> bytes:
    """The SSE body of a response whose output is ``items``: each item with the events streamed between its
    ``output_item.added`` and ``output_item.done``."""
    numbers = itertools.count()
    frames = [{"type": "response.created", "response": _response(response_id, "in_progress", [], None)}]
    frames.append({"type": "response.in_progress", "response": frames[0]["response"]})
    for index, (item, inner) in enumerate(items):
        frames.append({"type": "response.output_item.added", "output_index": index, "item": item["added"]})
        frames += [{**frame, "output_index": index} for frame in inner]
        frames.append({"type": "response.output_item.done", "output_index": index, "item": item["done"]})
    done = [item["done"] for item, _ in items]
    frames.append(
        {"type": "response.completed", "response": _response(response_id, "completed", done, usage)}
    )
    return b"".join(
        b"event: %s\ndata: %s\n\n"
        % (frame["type"].encode(), orjson.dumps({**frame, "sequence_number": next(numbers)}))
        for frame in frames
    )


def usage(input_tokens: int = 11, output_tokens: int = 7, cached: int = 0, reasoning: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def responses_stream(text: str, *, response_id: str = "resp_up_1", tokens: dict | None = None) -> RawReply:
    """A streamed Responses answer: one assistant message saying ``text`` in a few deltas."""
    item_id = f"msg_{response_id}"
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    message = {"id": item_id, "type": "message", "role": "assistant"}
    where = {"item_id": item_id, "content_index": 0}
    words = text.split(" ")
    pieces = [word + " " for word in words[:-1]] + words[-1:]
    inner = [
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in pieces
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
    ]
    item = {
        "added": {**message, "status": "in_progress", "content": []},
        "done": {**message, "status": "completed", "content": [part]},
    }
    return _sse(_events(response_id, [(item, inner)], tokens or usage()))


def function_call_stream(
    name: str, arguments: dict, *, call_id: str = "call_up_1", response_id: str = "resp_up_tool"
) -> RawReply:
    """A streamed Responses answer that calls function ``name``, its arguments in two deltas."""
    encoded = orjson.dumps(arguments).decode()
    half = len(encoded) // 2
    call = {"id": f"fc_{response_id}", "type": "function_call", "call_id": call_id, "name": name}
    where = {"item_id": call["id"]}
    inner = [
        {"type": "response.function_call_arguments.delta", **where, "delta": encoded[:half]},
        {"type": "response.function_call_arguments.delta", **where, "delta": encoded[half:]},
        {"type": "response.function_call_arguments.done", **where, "arguments": encoded},
    ]
    item = {
        "added": {**call, "status": "in_progress", "arguments": ""},
        "done": {**call, "status": "completed", "arguments": encoded},
    }
    return _sse(_events(response_id, [(item, inner)], usage(20, 9)))


def _sse(body: bytes) -> RawReply:
    return RawReply(200, body, headers={"Content-Type": "text/event-stream"})
