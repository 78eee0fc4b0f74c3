"""Streamed Responses answers of the fake upstream for the background tests, and waiting on a background
response's status."""

from __future__ import annotations

import time
import uuid

import openai
import orjson

from tests.fake_upstream import SSEReply
from tests.responses_events import USAGE

FINAL = {"completed", "failed", "cancelled", "incomplete"}


def text_frames(words: list[str], response_id: str | None = None, echoed: dict | None = None) -> list[dict]:
    """The events of a streamed text answer saying ``words``, numbered from 0; ``echoed``: request fields its
    response objects carry."""
    response_id = response_id or f"resp_up_{uuid.uuid4().hex[:12]}"
    opened = {
        "id": response_id,
        "object": "response",
        "status": "in_progress",
        "background": False,
        "output": [],
    }
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    text = "".join(words)
    done_item = {**item, "status": "completed", "content": [{"type": "output_text", "text": text}]}
    frames = [
        {"type": "response.created", "response": opened},
        {"type": "response.in_progress", "response": opened},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_1", "delta": word}
            for word in words
        ),
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": {**opened, "status": "completed", "output": [done_item], "usage": USAGE},
        },
    ]
    return [{**frame, "sequence_number": number} for number, frame in enumerate(frames)]


def text_reply(
    words: list[str],
    delay: float = 0.0,
    response_id: str | None = None,
    echoed: dict | None = None,
    **options,
) -> SSEReply:
    frames = text_frames(words, response_id, echoed)
    return SSEReply([orjson.dumps(frame) for frame in frames], delay=delay, done=False, **options)


def words(count: int) -> list[str]:
    return [f"w{n} " for n in range(count)]


def wait_for_status(sdk: openai.OpenAI, response_id: str, statuses: set[str], timeout: float = 20):
    """The response once its status is one of ``statuses``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        response = sdk.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        if time.monotonic() > deadline:
            raise TimeoutError(f"response {response_id} still {response.status} after {timeout}s")
        time.sleep(0.05)
