"""arq jobs: plain ``async def f(ctx, ...)``; dependencies come from the typed WorkerDeps."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from redis.exceptions import RedisError

from shared.breaker import BreakerSettings
from shared.byok import UnusableUpstreamKey, UpstreamKeyCipher
from shared.config import Settings
from shared.families import Family, error_body
from shared.job import InterceptionJob
from shared.upstream import Upstream, actor_headers
from worker.bedrock_upstream import BedrockUpstream
from worker.deps import WorkerDeps
from worker.families import CODECS
from worker.job_stream import JobStream, ResponseAliases, SlotLease
from worker.job_upstream import CircuitReports, JobUpstream
from worker.loop import ToolLoop

logger = logging.getLogger(__name__)


async def intercept(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Run one interception (shared/job.py), of any API family."""
    deps = WorkerDeps.of(ctx)
    job = InterceptionJob.model_validate(payload)
    interception_id = job.interception_id
    deps.metrics.queue_wait.observe(max(0.0, time.time() - job.enqueued_at))
    settings = deps.settings
    stream = job_stream(deps, job)
    try:
        cancelled, continued = await stream.begin(
            deps.keys.cancelled(interception_id), continued_response(job)
        )
        if cancelled:
            logger.info("interception %s: cancelled before the job started", interception_id)
            await stream.expire()
            return
    except RedisError as exc:  # an outage as the job starts: its client gets its error from the API
        logger.warning("interception %s: Redis failed as the job started: %s", interception_id, exc)
        return
    if continued is not None:  # the client continues from a response id the gateway showed it
        job = job.model_copy(update={"continues_from": continued})
    try:
        upstream = deps.upstreams[job.provider]
        headers = upstream_headers(job, upstream, settings, deps.cipher)
    except UnusableUpstreamKey as exc:
        logger.error("interception %s: %s", interception_id, exc)
        await _report_worker_error(stream, job.family, str(exc), "upstream_key_unusable")
        return
    interception = ToolLoop(
        job,
        CODECS[job.family],
        JobUpstream(upstream, headers, circuit_reports(deps, job, stream)),
        stream,
        deps.tools,
        deps.records,
        max_rounds=settings.mcp_max_rounds,
    )
    async with stream.heartbeats(deps.settings.heartbeat_interval):
        parent = otel_context.attach(propagate.extract(job.trace_context))
        try:  # the task copies the context: its spans are children of the API's
            work = asyncio.create_task(interception.run())
        finally:
            otel_context.detach(parent)
        deps.control.register(interception_id, work)
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            stopping = current is not None and current.cancelling()  # the worker is stopping, or a timeout
            if interception.answered:  # its end is being written: nothing is left to report
                if stopping:
                    raise
                return
            if stopping:
                await _report_worker_error(
                    stream, job.family, "the gateway's worker stopped before the answer was complete"
                )
                raise
            logger.info("interception %s: cancelled by its client", interception_id)
            if job.background:
                await _report_worker_error(
                    stream, job.family, "the response was cancelled", "response_cancelled"
                )
            else:
                message = "the request was cancelled: its client disconnected"
                await _report_worker_error(stream, job.family, message, "client_disconnected")
        except RedisError as exc:  # an outage: the worker goes on, this job cannot
            logger.warning("interception %s: Redis failed: %s", interception_id, exc)
            await _report_worker_error(
                stream, job.family, "the gateway lost its queue while handling the request"
            )
        except Exception:
            logger.exception("interception %s: worker error", interception_id)
            await _report_worker_error(stream, job.family, "the gateway failed while handling the request")
        finally:
            deps.control.unregister(interception_id)


def job_stream(deps: WorkerDeps, job: InterceptionJob) -> JobStream:
    """The job's stream, kept as long as its kind of job says: a background response's longer."""
    settings, keys, interception_id = deps.settings, deps.keys, job.interception_id
    kept_keys = (keys.owner(interception_id),)
    if job.background:
        retention, timeout = settings.background_retention, settings.background_job_timeout
        kept_keys += (keys.background(interception_id),)
    else:
        retention, timeout = settings.stream_retention, settings.job_timeout
    lease = SlotLease(
        slots_key=keys.actor_slots(job.actor_id),
        member=interception_id,
        lease=settings.slot_lease,
        kept_keys=kept_keys,
        retention=retention,
    )
    return JobStream(
        deps.writes,
        keys.stream(interception_id),
        max_bytes=settings.stream_max_bytes,
        retention=retention,
        lifetime=timeout + retention,
        lease=lease,
        aliases=ResponseAliases(keys.response_alias, settings.response_id_retention),
    )


def circuit_reports(deps: WorkerDeps, job: InterceptionJob, stream: JobStream) -> CircuitReports:
    family, provider, model = str(job.family), job.provider, str(job.body["model"])

    def seen(state: float, opened: bool) -> None:
        deps.metrics.circuit_seen(family, provider, model, state, opened)

    key = deps.keys.circuit(provider, family, model)
    return CircuitReports(stream, key, BreakerSettings.of(deps.settings), seen)


def continued_response(job: InterceptionJob) -> str | None:
    """The response a request continues from (Responses' ``previous_response_id``), if any."""
    previous = job.body.get("previous_response_id")
    return previous if isinstance(previous, str) and previous else None


def upstream_headers(
    job: InterceptionJob,
    upstream: Upstream | BedrockUpstream,
    settings: Settings,
    cipher: UpstreamKeyCipher | None,
) -> dict[str, str]:
    """The headers of this job's upstream calls beyond the usual ones: the client's own that go upstream
    (e.g. ``anthropic-version``), the client's own key (decrypted here, for this request only) and, with
    ``send_actor_headers``, who the actor is."""
    headers = dict(job.client_headers)
    if job.encrypted_upstream_key is not None:
        if cipher is None:
            raise UnusableUpstreamKey(
                "the request carries the client's upstream key but this worker has no AIBRIDGE_SECRET_KEY"
            )
        headers.update(upstream.auth_headers(cipher.decrypt(job.encrypted_upstream_key)))
    if settings.send_actor_headers and job.actor_id is not None:
        headers.update(actor_headers(job.actor_id, job.actor_metadata))
    return headers


async def _report_worker_error(
    stream: JobStream, family: Family, message: str, code: str = "worker_error"
) -> None:
    try:
        await stream.error(500, error_body(family, 500, message, "server_error", code))
        await stream.done()
    except RedisError as exc:
        logger.warning("could not report the worker error: %s", exc)
