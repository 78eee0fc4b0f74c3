"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from api import errors, health, usage_routes
from api.anthropic_routes import anthropic_router, bedrock_router
from api.auth import CachedClientKeys
from api.copilot_routes import copilot_router
from api.limits import Limits
from api.openai_routes import openai_router
from api.state import ApiState
from api.stream_hub import StreamHub
from api.unexpected import UnexpectedErrors
from shared.byok import UpstreamKeyCipher
from shared.client_keys import ClientKeyStore
from shared.config import Settings
from shared.keys import RedisKeys
from shared.metrics import ApiMetrics
from shared.providers import ANTHROPIC, BEDROCK, COPILOT, OPENAI, RouteFamilies, providers
from shared.recording.store import RecordStore
from shared.redis import connect, wait_until_answers
from shared.redis_url import describe_redis
from shared.upstream import new_session

logger = logging.getLogger(__name__)

# FastAPI's own OpenTelemetry layer looks up its providers on every request (4.6 % of the API's CPU at
# N = 1,000 in BENCHMARKS.md's round-two profile); the gateway makes its own spans (shared/tracing.py).
NO_FRAMEWORK_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

PROVIDER_ROUTERS = {  # by provider type
    OPENAI: openai_router,
    ANTHROPIC: anthropic_router,
    BEDROCK: bedrock_router,
    COPILOT: copilot_router,
}


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = RedisKeys(settings.key_prefix)
        logger.info("API on %s", describe_redis(settings.redis_url, settings.key_prefix))
        redis = await connect(settings.redis_url, keys)
        # serves from the start: requests get a 503 queue_unavailable until Redis answers
        answered = asyncio.create_task(wait_until_answers(redis, settings.redis_url))
        session = new_session()
        streams = StreamHub(redis, keys.api_wake, settings.relay_buffer_bytes)
        app.state.aibridge_records = records = RecordStore(settings.database_url)
        app.state.aibridge_client_keys = (  # None: no client keys (AIBRIDGE_AUTH=none)
            CachedClientKeys(ClientKeyStore(records.engine), settings.key_cache_ttl)
            if settings.auth == "keys"
            else None
        )
        app.state.aibridge = ApiState(
            settings=settings,
            keys=keys,
            redis=redis,
            session=session,
            streams=streams,
            metrics=ApiMetrics(),
            limits=Limits.of(settings),
            cipher=UpstreamKeyCipher(settings.secret_key) if settings.secret_key is not None else None,
            providers={each.name: each for each in every_provider},
        )
        streams.start()
        try:
            yield
        finally:
            answered.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answered
            await streams.stop()
            await app.state.aibridge_records.close()
            await session.close()
            await redis.aclose()

    app = FastAPI(
        title="aibridge",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        telemetry=NO_FRAMEWORK_TELEMETRY,
    )
    every_provider = providers(settings)
    app.state.aibridge_routes = RouteFamilies(every_provider)
    for each in every_provider:
        app.include_router(PROVIDER_ROUTERS[each.type](each))
    app.include_router(health.router)
    app.include_router(usage_routes.router)
    app.add_middleware(UnexpectedErrors)
    errors.install(app)
    return app
