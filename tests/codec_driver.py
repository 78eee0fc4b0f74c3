"""Driving a family's codec as worker/loop.py does, without processes: for the codecs' unit tests."""

from __future__ import annotations

from typing import Any

from worker.codec import Codec, SseEvent, ToolResult


def stream_rounds(
    codec: Codec, answers: list[list[SseEvent]], result: Any, results: list[ToolResult] | None = None
) -> tuple[list[bytes], list, list[dict]]:
    """Stream ``answers`` (one list of upstream events a round) through ``codec``, each injected call
    answered with ``result`` (or the rounds continued with ``results``); what the client got, the rounds,
    and the requests sent."""
    relayed: list[bytes] = []
    rounds, requests = [], []
    for events in answers:
        requests.append(codec.request_body(streaming=True))
        current = codec.new_round()
        rounds.append(current)
        for event in events:
            relayed += current.take(event)
            if codec.is_stream_end(event):
                break
        calls = current.injected_calls()
        if not calls:
            relayed += current.closing_events()
            break
        codec.continue_after(current, results or [ToolResult(call, result, None) for call in calls])
    return relayed, rounds, requests
