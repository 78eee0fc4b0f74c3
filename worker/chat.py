"""The OpenAI chat-completions interception: upstream rounds, relayed to the job's stream, with the tools of
the configured MCP servers injected and their calls run here until the model answers."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager
from typing import Any, Protocol

import orjson
from opentelemetry.trace import Span

from shared.errors import error_body, normalize_error_body
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool, ToolCallError
from shared.recording.records import Outcome, Recorder
from shared.token_counts import TokenCounts
from shared.tracing import interception_attributes, tracer
from shared.upstream import ERROR_BODY_LIMIT, OpenAIUpstream, UpstreamCut, UpstreamFailure
from worker.assistant import AssistantMessage, ToolCall
from worker.chunks import parse_chunk, replace_id, replace_id_and_usage
from worker.control import CLIENT_GONE
from worker.job_stream import JobStream
from worker.recording import InterceptionRecording
from worker.sse import iter_sse_batches
from worker.usage import add_usage

logger = logging.getLogger(__name__)

PATH = "/chat/completions"
END = b"[DONE]"


def is_stream_end(data: bytes) -> bool:
    """A chat-completions stream ends with a ``[DONE]`` event."""
    return data == END


def _token_counts(usage: dict[str, Any] | None) -> TokenCounts | None:
    """A chat-completions usage object as token counts: ``input`` excludes the cached prompt tokens, never
    below 0 (some providers report more cached tokens than prompt tokens)."""
    if usage is None:
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    cached = int(prompt.get("cached_tokens") or 0)
    details = {
        "prompt_audio": prompt.get("audio_tokens"),
        "prompt_cached": cached,
        "completion_accepted_prediction": completion.get("accepted_prediction_tokens"),
        "completion_rejected_prediction": completion.get("rejected_prediction_tokens"),
        "completion_audio": completion.get("audio_tokens"),
        "completion_reasoning": completion.get("reasoning_tokens"),
    }
    return TokenCounts(
        input=max(0, int(usage.get("prompt_tokens") or 0) - cached),
        output=int(usage.get("completion_tokens") or 0),
        cache_read=cached,
        extra={name: int(count or 0) for name, count in details.items()},
    )


class ToolProxy(Protocol):
    """The MCP tools a worker can inject and call (coder/aibridge's ``mcp.ServerProxier``)."""

    def tools(self) -> list[McpTool]: ...

    async def call(self, tool: McpTool, arguments: dict[str, Any]) -> Any: ...


class ChatCompletionsInterception:
    def __init__(
        self,
        job: InterceptionJob,
        upstream: OpenAIUpstream,
        stream: JobStream,
        tools: ToolProxy,
        recorder: Recorder,
        *,
        max_rounds: int,
        upstream_headers: dict[str, str] | None = None,
    ) -> None:
        self._job = job
        self._upstream_headers = upstream_headers
        self._recording = InterceptionRecording(recorder, job)
        self._outcome = Outcome.OK
        self._upstream = upstream
        self._stream = stream
        self._tools = tools
        self._injected = {tool.injected_name: tool for tool in tools.tools()}
        self._max_rounds = max_rounds
        self._messages: list[Any] = list(job.body.get("messages") or [])
        self._id_json = orjson.dumps(job.interception_id)
        self._cumulative_usage: dict[str, Any] = {}
        self._usage_asked = (job.body.get("stream_options") or {}).get("include_usage") is True

    async def run(self) -> None:
        self._recording.started()
        try:
            try:
                if self._job.streaming:
                    await self._run_streaming()
                else:
                    await self._run_blocking()
            except UpstreamFailure as failure:
                cut = isinstance(failure, UpstreamCut)
                await self._error(
                    failure.status, failure.body, Outcome.UPSTREAM_CUT if cut else Outcome.UPSTREAM_ERROR
                )
            await self._stream.done()
        except asyncio.CancelledError as cancelled:
            client_gone = cancelled.args == (CLIENT_GONE,)
            self._outcome = Outcome.CLIENT_GONE if client_gone else Outcome.WORKER_ERROR
            raise
        except Exception:
            self._outcome = Outcome.WORKER_ERROR
            raise
        finally:
            self._recording.ended(self._outcome)

    async def _error(self, status: int, body: bytes, outcome: Outcome = Outcome.UPSTREAM_ERROR) -> None:
        """Tell the client the interception failed: the answer before the stream opened, an event after."""
        self._outcome = outcome
        await self._stream.error(status, body)

    async def _result(self, status: int, body: bytes) -> None:
        if status >= 400:
            self._outcome = Outcome.UPSTREAM_ERROR
        await self._stream.result(status, body)

    def _span_attributes(self) -> dict[str, str | bool]:
        return interception_attributes(self._job)

    def _upstream_span(self) -> AbstractContextManager[Span]:
        return tracer().start_as_current_span(
            "Intercept.ProcessRequest.Upstream", attributes=self._span_attributes()
        )

    def _request_body(self, *, streaming: bool) -> dict[str, Any]:
        body = {**self._job.body, "messages": self._messages}
        if self._injected:
            offered = [tool.as_openai_tool() for tool in self._injected.values()]
            body["tools"] = [*(body.get("tools") or []), *offered]
        if streaming:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            body["n"] = 1
        return body

    def _round_limit_error(self) -> bytes:
        return error_body(
            f"the model kept calling gateway tools for {self._max_rounds} rounds; stopped",
            "server_error",
            "tool_round_limit",
        )

    async def _run_streaming(self) -> None:
        for _ in range(self._max_rounds):
            msg_id, calls = await self._stream_round()
            if not calls:
                return
            await self._stream.open()  # headers and pings reach the client while the tools run
            await self._call_tools(msg_id, calls)
        await self._error(500, self._round_limit_error())

    async def _stream_round(self) -> tuple[str, list[ToolCall]]:
        """One streamed upstream call; returns its message id and the injected tool calls to run before the
        next one."""
        message = AssistantMessage()
        try:
            with self._upstream_span():
                withheld = await self._relay_round(message)
        finally:
            self._recording.round_ended(message.msg_id, _token_counts(message.usage))
        if not withheld:
            self._record_client_calls(message)
            return message.msg_id, []
        calls = self._next_calls(message)
        if not calls:  # the last round after all: its end, held back with its tool calls, goes out now
            await self._stream.chunks([END])
        return message.msg_id, calls

    async def _relay_round(self, message: AssistantMessage) -> bool:
        """Relay one streamed upstream call into ``message``; True if its tool calls are the gateway's own
        (withheld from the client)."""
        withheld = False
        async with self._upstream.post(
            PATH, self._request_body(streaming=True), self._upstream_headers
        ) as response:
            self._stream.upstream_answered(response.headers.items())
            if response.status >= 400:
                raw = await response.content.read(ERROR_BODY_LIMIT)
                await self._error(
                    response.status, self._upstream.error_body(response.status, raw, self._upstream_headers)
                )
                return False
            async for batch in iter_sse_batches(response.content, is_stream_end):
                relayed, withheld, failure = self._take_batch(batch, message, withheld)
                if relayed:
                    await self._stream.chunks(relayed)
                if failure is not None:
                    await self._error(failure.status, failure.body)
                    return False
        return withheld

    def _take_batch(
        self, batch: list[bytes], message: AssistantMessage, withheld: bool
    ) -> tuple[list[bytes], bool, UpstreamFailure | None]:
        """Read one batch of upstream events into ``message``: the rewritten chunks to relay (with the
        stream's end, unless the round's tool calls are withheld: a tool round's end is not the answer's),
        whether they are withheld, and a failure to report."""
        relayed: list[bytes] = []
        for data in batch:
            if is_stream_end(data):
                if not withheld:
                    relayed.append(data)
                break
            chunk = parse_chunk(data)
            if isinstance(chunk, UpstreamFailure):
                logger.warning("interception %s: bad upstream chunk", self._job.interception_id)
                return relayed, withheld, chunk
            message.msg_id = message.msg_id or str(chunk.get("id") or "")
            usage = chunk.get("usage")
            if isinstance(usage, dict):  # counted even in a withheld chunk: some providers put it there
                message.usage = usage
                self._cumulative_usage = add_usage(self._cumulative_usage, usage)
            choices = chunk.get("choices")
            if choices:
                delta = choices[0].get("delta") or {}
                message.add_delta(delta)
                withheld = withheld or self._starts_injected_call(delta)
                if withheld:
                    continue
            elif isinstance(usage, dict) and (withheld or not self._usage_asked):
                continue  # a usage chunk: for a client that asked, once (a tool round's adds to the answer's)
            relayed.append(self._rewrite(data, chunk))
        return relayed, withheld, None

    def _rewrite(self, data: bytes, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), dict):
            return replace_id_and_usage(chunk, self._id_json, self._cumulative_usage)
        return replace_id(data, chunk, self._id_json)

    def _record_client_calls(self, message: AssistantMessage) -> None:
        for call in message.tool_calls:
            self._recording.tool_called(message.msg_id, call, None)

    def _starts_injected_call(self, delta: dict[str, Any]) -> bool:
        calls = delta.get("tool_calls")
        if not calls:
            return False
        name = ((calls[0].get("function") or {}).get("name") or "").strip()
        return name in self._injected

    def _next_calls(self, message: AssistantMessage) -> list[ToolCall]:
        calls = message.tool_calls
        foreign = [call.name for call in calls if call.name not in self._injected]
        if len(foreign) == len(calls):
            self._record_client_calls(message)
            return []
        if foreign:
            logger.warning(
                "interception %s: gateway tools called together with client tools %s; not continuing",
                self._job.interception_id,
                foreign,
            )
            return []
        self._messages.append(message.as_request_message())
        return calls

    async def _call_tools(self, msg_id: str, calls: list[ToolCall]) -> None:
        for call in calls:
            tool = self._injected[call.name]
            error = None
            try:
                with tracer().start_as_current_span(
                    "Intercept.ProcessRequest.ToolCall",
                    attributes={
                        **self._span_attributes(),
                        "mcp.server": tool.server_url,
                        "mcp.tool": tool.name,
                    },
                ):
                    result = await self._call_tool(tool, call)
            except ToolCallError as exc:
                logger.info("interception %s: tool %s failed: %s", self._job.interception_id, call.name, exc)
                error = str(exc)
                result = {"error": True, "message": error}
            self._recording.tool_called(msg_id, call, tool, error)
            self._messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": orjson.dumps(result).decode()}
            )

    async def _call_tool(self, tool: McpTool, call: ToolCall) -> Any:
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            raise ToolCallError(f"the tool arguments are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ToolCallError("the tool arguments must be a JSON object")
        return await self._tools.call(tool, arguments)

    async def _run_blocking(self) -> None:
        for round_number in range(1, self._max_rounds + 1):
            message = AssistantMessage()
            try:
                with self._upstream_span():
                    completion, raw, status = await self._blocking_round(message)
            finally:
                self._recording.round_ended(message.msg_id, _token_counts(message.usage))
            if completion is None:
                return
            calls = self._next_calls(message)
            if not calls:
                if round_number > 1 and self._cumulative_usage:
                    body = replace_id_and_usage(completion, self._id_json, self._cumulative_usage)
                else:
                    body = replace_id(raw, completion, self._id_json)
                await self._result(status, body)
                return
            await self._call_tools(message.msg_id, calls)
        await self._result(500, self._round_limit_error())

    async def _blocking_round(self, message: AssistantMessage) -> tuple[dict[str, Any] | None, bytes, int]:
        """One blocking upstream call, read into ``message``: the completion (None when the call failed and
        the client has been answered), the body as sent, and the status."""
        async with self._upstream.post(
            PATH, self._request_body(streaming=False), self._upstream_headers
        ) as response:
            self._stream.upstream_answered(response.headers.items())
            raw = await response.read()
            status = response.status
        if status >= 400:
            await self._result(status, self._upstream.error_body(status, raw, self._upstream_headers))
            return None, raw, status
        try:
            completion = orjson.loads(raw)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            await self._result(502, normalize_error_body(raw, "the upstream sent a malformed completion"))
            return None, raw, status
        message.add_completion(completion)
        if message.usage is not None:
            self._cumulative_usage = add_usage(self._cumulative_usage, message.usage)
        return completion, raw, status
