"""The OpenAI chat-completions interception: one upstream call, relayed chunk by chunk to the job's stream."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from shared.errors import normalize_error_body
from shared.messages import ChatJob
from shared.upstream import ERROR_BODY_LIMIT, OpenAIUpstream, UpstreamFailure
from worker.chunks import replace_id, replace_id_and_usage
from worker.job_stream import JobStream
from worker.sse import iter_sse_data
from worker.usage import add_usage

logger = logging.getLogger(__name__)

PATH = "/chat/completions"


class ChatCompletionsInterception:
    def __init__(self, job: ChatJob, upstream: OpenAIUpstream, stream: JobStream) -> None:
        self._job = job
        self._upstream = upstream
        self._stream = stream
        self._id_json = orjson.dumps(job.interception_id)
        self._cumulative_usage: dict[str, Any] = {}

    async def run(self) -> None:
        try:
            if self._job.streaming:
                await self._run_streaming()
            else:
                await self._run_blocking()
        except UpstreamFailure as failure:
            await self._stream.error(failure.status, failure.body)
        await self._stream.done()

    def _streaming_body(self) -> dict[str, Any]:
        body = dict(self._job.body)
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        body["n"] = 1
        return body

    async def _run_streaming(self) -> None:
        async with self._upstream.post(PATH, self._streaming_body()) as response:
            if response.status >= 400:
                raw = await response.content.read(ERROR_BODY_LIMIT)
                await self._stream.error(
                    response.status, normalize_error_body(raw, f"upstream answered {response.status}")
                )
                return
            async for data in iter_sse_data(response.content):
                if data == b"[DONE]" or not await self._relay_chunk(data):
                    return

    async def _relay_chunk(self, data: bytes) -> bool:
        """Relay one upstream chunk; False when the upstream sent an error and the stream must end."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            logger.warning("interception %s: upstream chunk is not a JSON object", self._job.interception_id)
            await self._stream.error(502, normalize_error_body(data, "the upstream sent a malformed chunk"))
            return False
        if "error" in chunk:
            await self._stream.error(500, normalize_error_body(data, "the upstream reported an error"))
            return False
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._cumulative_usage = add_usage(self._cumulative_usage, usage)
            await self._stream.chunk(replace_id_and_usage(chunk, self._id_json, self._cumulative_usage))
        else:
            await self._stream.chunk(replace_id(data, chunk, self._id_json))
        return True

    async def _run_blocking(self) -> None:
        async with self._upstream.post(PATH, dict(self._job.body)) as response:
            raw = await response.read()
            status = response.status
        if status >= 400:
            await self._stream.result(status, normalize_error_body(raw, f"upstream answered {status}"))
            return
        try:
            completion = orjson.loads(raw)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            await self._stream.result(
                502, normalize_error_body(raw, "the upstream sent a malformed completion")
            )
            return
        await self._stream.result(status, replace_id(raw, completion, self._id_json))
