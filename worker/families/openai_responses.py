"""The OpenAI Responses family (``POST /responses``): the Codec the tool loop drives for one interception.

The client sees one response: the first round's ``response.created`` and ``response.in_progress``, the output
items of every round numbered on from the ones before (the gateway's own ``function_call`` items and their
events left out), ``sequence_number`` increasing by one over all rounds, and the last round's end with the
usage summed over the rounds and the output of every round. The response id is the first round's upstream
id, not the interception's: it is a handle the client uses against the provider (``previous_response_id``,
``GET /responses/{id}``, passed through), which an id of the gateway's own would break.

A tool round continues with the full conversation: the client's ``input``, the round's output items (its
reasoning items, with their ``encrypted_content`` when the client asked for it) and the tool results as
``function_call_output`` items, the client's own ``previous_response_id`` kept. That is correct whether the
client stores responses or not (Codex sends ``store: false``, where continuing from the last upstream
response's id would fail). With ``store: false`` a reasoning item is carried only with its
``encrypted_content``: the upstream kept no copy to find it by its id."""

from __future__ import annotations

from typing import Any

import orjson

from shared.families import Family
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from worker.codec import Round, SseEvent, ToolResult
from worker.families.responses_round import Interception, ResponsesRound
from worker.families.responses_wire import STREAM_ENDS, function_call_output, json_object, responses_tool

PATH = "/responses"


def is_stream_end(event: SseEvent) -> bool:
    if event.name is not None:
        return event.name in STREAM_ENDS
    parsed = json_object(event.data)
    return parsed is not None and parsed.get("type") in STREAM_ENDS


def input_items(value: Any) -> list[Any]:
    """The request's ``input`` as items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or [])


def is_reasoning_without_its_content(item: dict[str, Any]) -> bool:
    """A reasoning item without its ``encrypted_content``: only a stored response lets the upstream resolve
    it by id."""
    return item.get("type") == "reasoning" and not item.get("encrypted_content")


class ResponsesCodec:
    family = Family.OPENAI_RESPONSES
    path = PATH
    is_stream_end = staticmethod(is_stream_end)

    def __init__(self, job: InterceptionJob, tools: list[McpTool]) -> None:
        self._body = job.body
        self._tools = [responses_tool(tool) for tool in tools]
        self._input: Any = job.body.get("input")
        self._interception = Interception(
            injected=frozenset(tool.injected_name for tool in tools),
            response_id=job.response_id,
            background=job.background,
            shown_previous=job.body.get("previous_response_id") if job.continues_from else None,
        )
        self._background = job.background
        self._continues_from = job.continues_from

    def request_body(self, *, streaming: bool) -> dict[str, Any]:
        body = dict(self._body)
        if self._input is not None:
            body["input"] = self._input
        if self._tools:
            body["tools"] = [*(body.get("tools") or []), *self._tools]
        if streaming:
            body["stream"] = True
        else:
            body.pop("stream", None)
        if self._background:  # the gateway runs it in the background, the provider streams it
            body.pop("background", None)
        if self._continues_from is not None:  # the upstream's id of the response the client named
            body["previous_response_id"] = self._continues_from
        return body

    def new_round(self) -> ResponsesRound:
        return ResponsesRound(self._interception)

    def continue_after(self, round: Round, results: list[ToolResult]) -> None:
        responses_round = _own(round)
        self._interception.shown.extend(responses_round.shown_items())
        outputs = [function_call_output(result) for result in results]
        carried = responses_round.output_items()
        if self._body.get("store") is False:
            carried = [item for item in carried if not is_reasoning_without_its_content(item)]
        self._input = [*input_items(self._input), *carried, *outputs]

    def take_aliases(self) -> dict[str, str]:
        aliases, self._interception.aliases = self._interception.aliases, {}
        return aliases

    def final_body(self, round: Round) -> bytes:
        responses_round = _own(round)
        if not responses_round.changed():
            return responses_round.raw_body
        return orjson.dumps(responses_round.final_response())


def _own(round: Round) -> ResponsesRound:
    if not isinstance(round, ResponsesRound):
        raise TypeError(f"not a round of this codec: {type(round).__name__}")
    return round
