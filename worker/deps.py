"""What a worker's jobs need, built once per worker process and typed (instead of arq's ``ctx`` dict)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import aiohttp
from arq.connections import ArqRedis
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from shared.byok import UpstreamKeyCipher
from shared.config import Settings
from shared.key_pool import KeyPool
from shared.keys import RedisKeys
from shared.mcp.manager import McpToolManager
from shared.metrics import WorkerMetrics
from shared.providers import BEDROCK, Provider, providers
from shared.recording.drain import RecordDrainer
from shared.recording.outbox import OutboxRecorder
from shared.recording.records import RecorderGroup
from shared.recording.store import RecordStore
from shared.upstream import Upstream, new_session
from worker.bedrock_upstream import BedrockUpstream
from worker.control import ControlListener
from worker.stream_writes import CoalescingWriter

logger = logging.getLogger(__name__)

DEPS_KEY = "aibridge"


def upstream_of(
    session: aiohttp.ClientSession, provider: Provider, settings: Settings, pool: KeyPool | None
) -> Upstream | BedrockUpstream:
    """How the worker calls ``provider``: over HTTP with its key (or its pool of keys), or, a Bedrock one,
    signed."""
    if provider.type == BEDROCK:
        return BedrockUpstream(session, provider, settings)
    return Upstream(session, provider, settings, pool)


@dataclass
class WorkerDeps:
    settings: Settings
    keys: RedisKeys
    redis: ArqRedis
    session: aiohttp.ClientSession
    upstreams: dict[str, Upstream | BedrockUpstream]  # by provider name
    control: ControlListener
    tools: McpToolManager
    writes: CoalescingWriter
    record_store: RecordStore
    recorder: OutboxRecorder
    drainer: RecordDrainer
    metrics: WorkerMetrics
    cipher: UpstreamKeyCipher | None  # None without AIBRIDGE_SECRET_KEY: no bring-your-own-key jobs
    worker_id: str
    _presence: asyncio.Task[None] | None = None
    _metrics_server: WSGIServer | None = None

    @property
    def records(self) -> RecorderGroup:
        """Where an interception's records go: the outbox (drained into the database) and the metrics."""
        return RecorderGroup(self.recorder, self.metrics)

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> WorkerDeps:
        return ctx[DEPS_KEY]

    @classmethod
    async def start(cls, settings: Settings, redis: ArqRedis, control: ControlListener) -> WorkerDeps:
        session = new_session()
        keys = RedisKeys(settings.key_prefix)
        worker_id = uuid.uuid4().hex[:12]
        writes = CoalescingWriter(redis)
        record_store = RecordStore(settings.database_url)
        drainer = RecordDrainer(
            redis,
            record_store,
            keys,
            worker_id,
            maxlen=settings.record_outbox_maxlen,
            heartbeat_timeout=settings.heartbeat_timeout,
            claim_idle=settings.record_claim_idle,
        )
        recorder = OutboxRecorder(writes, keys, worker_id, settings.record_outbox_maxlen)
        tools = McpToolManager(settings.mcp_servers, call_timeout=settings.mcp_call_timeout)
        await tools.start()
        deps = cls(
            settings=settings,
            keys=keys,
            redis=redis,
            session=session,
            upstreams={},
            control=control,
            tools=tools,
            writes=writes,
            record_store=record_store,
            recorder=recorder,
            drainer=drainer,
            metrics=WorkerMetrics(
                lambda: {
                    "written": drainer.writer.written,
                    "dropped": recorder.dropped,
                    "failures": drainer.writer.failures,
                },
                models=settings.metrics_models,
                max_label_values=settings.metrics_max_label_values,
            ),
            cipher=UpstreamKeyCipher(settings.secret_key) if settings.secret_key is not None else None,
            worker_id=worker_id,
        )
        pools = {each.name: deps._key_pool(each) for each in providers(settings)}
        for pool in pools.values():
            if pool is not None:
                await pool.enable_all()
        deps.upstreams = {
            each.name: upstream_of(session, each, settings, pools[each.name]) for each in providers(settings)
        }
        if settings.worker_metrics_port is not None:
            deps._metrics_server, _ = start_http_server(
                settings.worker_metrics_port, registry=deps.metrics.registry
            )
        deps.writes.start()
        deps.drainer.start()
        control.start()
        try:  # announce only once cancellations can reach this worker
            await asyncio.wait_for(control.subscribed.wait(), settings.heartbeat_timeout)
        except TimeoutError:
            logger.warning("control channel not subscribed yet: cancellations are missed until it is")
        await deps._announce()
        deps._presence = asyncio.create_task(deps._announce_forever())
        return deps

    def _key_pool(self, provider: Provider) -> KeyPool | None:
        """The pool of a provider with several keys; with one, or none, the worker needs no Redis for it."""
        if len(provider.keys) < 2:
            return None
        return KeyPool(
            self.redis,
            self.keys.key_pool(provider.name),
            provider,
            self.settings.upstream_key_cooldown,
            self.metrics.key_pools,
        )

    async def close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._presence is not None:
            self._presence.cancel()
            await asyncio.gather(self._presence, return_exceptions=True)
        await self.control.stop()
        await self.recorder.flushed(timeout=5)  # the last ended records, into the outbox
        await self.writes.stop()
        await self.drainer.close()
        await self.record_store.close()
        await self.tools.close()
        await self.session.close()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.workers, self.worker_id)
                pipe.delete(self.keys.worker(self.worker_id))
                await pipe.execute()
        except RedisError as exc:
            logger.warning("could not deregister worker %s: %s", self.worker_id, exc)

    async def _announce(self) -> None:
        """Record this worker as live: a heartbeat in the workers set and a description that expires."""
        now = time.time()
        ttl = max(1, int(self.settings.heartbeat_timeout))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.workers, {self.worker_id: now})
            pipe.zremrangebyscore(self.keys.workers, "-inf", now - 3600)
            pipe.hset(
                self.keys.worker(self.worker_id),
                mapping={
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "jobs": self.control.running,
                    "heartbeat": now,
                },
            )
            pipe.expire(self.keys.worker(self.worker_id), ttl)
            await pipe.execute()

    async def _announce_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self._announce()
            except RedisError as exc:
                logger.warning("worker heartbeat failed: %s", exc)
