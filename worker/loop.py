"""The tool loop of every API family: upstream rounds, relayed to the job's stream through the family's
codec, with the tools of the configured MCP servers injected and their calls run here until the model
answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, Protocol

import aiohttp
import orjson

from shared.errors import prefix_message
from shared.families import error_body, normalize_error
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool, ToolCallError
from shared.recording.records import Outcome, Recorder
from shared.tracing import interception_attributes, tracer
from shared.upstream import ERROR_BODY_LIMIT, UpstreamCut, UpstreamFailure
from worker.bedrock_stream import CONTENT_TYPE as EVENTSTREAM
from worker.bedrock_stream import iter_eventstream_batches
from worker.codec import CodecFactory, Round, SseEvent, ToolCall, ToolResult
from worker.control import CLIENT_GONE
from worker.job_stream import JobStream
from worker.job_upstream import JobUpstream
from worker.recording import InterceptionRecording
from worker.sse import StreamEnd, iter_sse_batches

logger = logging.getLogger(__name__)


class ToolProxy(Protocol):
    """The MCP tools a worker can inject and call (coder/aibridge's ``mcp.ServerProxier``)."""

    def tools(self) -> list[McpTool]: ...

    async def call(self, tool: McpTool, arguments: dict[str, Any]) -> Any: ...


class ToolLoop:
    def __init__(
        self,
        job: InterceptionJob,
        codec_factory: CodecFactory,
        upstream: JobUpstream,
        stream: JobStream,
        tools: ToolProxy,
        recorder: Recorder,
        *,
        max_rounds: int,
    ) -> None:
        self._job = job
        self._upstream = upstream
        self._stream = stream
        self._tools = tools
        offered = tools.tools()
        self._injected = {tool.injected_name: tool for tool in offered}
        self._codec = codec_factory(job, offered)
        self._max_rounds = max_rounds
        self._recording = InterceptionRecording(recorder, job)
        self._outcome = Outcome.OK
        self.answered = False  # the client has all of its answer (or its error): only the end is to come
        self._ending: asyncio.Future[None] | None = None  # the write of the stream's end

    async def run(self) -> None:
        self._recording.started()
        try:
            try:
                if self._job.streaming:
                    await self._run_streaming()
                else:
                    await self._run_blocking()
            except UpstreamFailure as failure:
                if failure.headers:
                    self._stream.upstream_answered(failure.headers.items())
                cut = isinstance(failure, UpstreamCut)
                outcome = Outcome.UPSTREAM_CUT if cut else None
                await self._fail(failure.status, failure.body_for(self._job.family), outcome)
            self.answered = True
            await self._end()
        except asyncio.CancelledError as cancelled:
            if not self.answered:
                client_gone = cancelled.args == (CLIENT_GONE,)
                self._outcome = Outcome.CLIENT_GONE if client_gone else Outcome.WORKER_ERROR
                raise
            await self._end()  # a client that leaves once it has read it all ends nothing
            raise
        except Exception:
            self._outcome = Outcome.WORKER_ERROR
            raise
        finally:
            self._recording.ended(self._outcome)

    async def _end(self) -> None:
        """Write the stream's end, once, whatever becomes of this task meanwhile."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._stream.done())
        await asyncio.shield(self._ending)

    async def _fail(self, status: int, body: bytes, outcome: Outcome | None = None) -> None:
        """Tell the client the interception failed: the answer before the stream opened, an event after."""
        self._outcome = outcome or Outcome.UPSTREAM_ERROR
        await self._stream.error(status, body)

    async def _run_streaming(self) -> None:
        for _ in range(self._max_rounds):
            round = self._codec.new_round()
            with self._upstream_round(round):
                await self._relay_round(round)
            calls = self._calls_to_run(round)
            if not calls:
                if closing := round.closing_events():  # the last round after all: what it held back
                    await self._stream.chunks(closing)
                return
            await self._stream.open()  # headers and pings reach the client while the tools run
            await self._run_tools(round, calls)
        await self._fail(500, self._round_limit_error())

    async def _relay_round(self, round: Round) -> None:
        """Relay one streamed upstream call through ``round``."""
        async with self._post(streaming=True) as response:
            self._stream.upstream_answered(response.headers.items())
            if response.status >= 400:
                raw = await response.content.read(ERROR_BODY_LIMIT)
                raise UpstreamFailure(response.status, self._error_body(response.status, raw))
            async for batch in _event_batches(response, self._codec.is_stream_end):
                relayed, failure = _take(round, batch)
                self._stream.remember(self._codec.take_aliases())
                if failure is None and self._codec.is_stream_end(batch[-1]) and not round.injected_calls():
                    self.answered = True  # what this write sends ends the answer
                if relayed:
                    await self._stream.chunks(relayed)
                if failure is not None:
                    raise failure

    async def _run_blocking(self) -> None:
        for _ in range(self._max_rounds):
            round = self._codec.new_round()
            with self._upstream_round(round):
                async with self._post(streaming=False) as response:
                    self._stream.upstream_answered(response.headers.items())
                    raw = await response.read()
                    status = response.status
                if status >= 400:
                    raise UpstreamFailure(status, self._error_body(status, raw))
                round.take_body(raw)
                self._stream.remember(self._codec.take_aliases())
            calls = self._calls_to_run(round)
            if not calls:
                await self._stream.result(status, self._codec.final_body(round))
                return
            await self._run_tools(round, calls)
        await self._fail(500, self._round_limit_error())

    def _post(self, *, streaming: bool) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        body = self._codec.request_body(streaming=streaming)
        return self._upstream.post(self._codec.path, body, self._recording.key_used)

    @contextmanager
    def _upstream_round(self, round: Round) -> Iterator[None]:
        """One upstream call's span, its outcome for the circuit, and its records once it ends, however it
        ends."""
        try:
            with tracer().start_as_current_span(
                "Intercept.ProcessRequest.Upstream", attributes=interception_attributes(self._job)
            ):
                yield
        except UpstreamFailure as failure:
            self._upstream.called(failure)
            raise
        else:
            self._upstream.called(None)
        finally:
            self._recording.round_ended(round.message_id, round.usage)
            for thought in round.thoughts:
                self._recording.thought(round.message_id, thought)

    def _error_body(self, status: int, raw: bytes) -> bytes:
        """The client's body for an upstream's error answer, in the family's shape: the upstream's own, told
        first, on a 401 to a request that carried no key at all, that the gateway has none."""
        body = normalize_error(self._job.family, status, raw)
        if status == 401 and (keyless := self._upstream.keyless()) is not None:
            return prefix_message(body, keyless)
        return body

    def _round_limit_error(self) -> bytes:
        message = f"the model kept calling gateway tools for {self._max_rounds} rounds; stopped"
        return error_body(self._job.family, 500, message, "server_error", "tool_round_limit")

    def _calls_to_run(self, round: Round) -> list[ToolCall]:
        """The round's injected tool calls, its client calls recorded."""
        for call in round.client_calls():
            self._recording.tool_called(round.message_id, call, None)
        return round.injected_calls()

    async def _run_tools(self, round: Round, calls: list[ToolCall]) -> None:
        results = [await self._run_tool(round.message_id, call) for call in calls]
        self._codec.continue_after(round, results)

    async def _run_tool(self, msg_id: str, call: ToolCall) -> ToolResult:
        tool = self._injected[call.name]
        error = None
        try:
            with tracer().start_as_current_span(
                "Intercept.ProcessRequest.ToolCall",
                attributes={
                    **interception_attributes(self._job),
                    "mcp.server": tool.server_url,
                    "mcp.tool": tool.name,
                },
            ):
                content = await self._call_tool(tool, call)
        except ToolCallError as exc:
            logger.info("interception %s: tool %s failed: %s", self._job.interception_id, call.name, exc)
            error = str(exc)
            content = {"error": True, "message": error}
        self._recording.tool_called(msg_id, call, tool, error)
        return ToolResult(call, content, error)

    async def _call_tool(self, tool: McpTool, call: ToolCall) -> Any:
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            raise ToolCallError(f"the tool arguments are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ToolCallError("the tool arguments must be a JSON object")
        return await self._tools.call(tool, arguments)


def _event_batches(response: aiohttp.ClientResponse, is_end: StreamEnd) -> AsyncIterator[list[SseEvent]]:
    """A streamed answer's events, a read's worth at a time: SSE, or an AWS event stream (Bedrock's)."""
    if response.content_type == EVENTSTREAM:
        return iter_eventstream_batches(response.content, is_end)
    return iter_sse_batches(response.content, is_end)


def _take(round: Round, batch: list[SseEvent]) -> tuple[list[bytes], UpstreamFailure | None]:
    """The events to relay of one batch read by ``round``, and the failure an event raised (the events
    before it are relayed first)."""
    relayed: list[bytes] = []
    try:
        for event in batch:
            relayed.extend(round.take(event))
    except UpstreamFailure as failure:
        return relayed, failure
    return relayed, None
