"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from api import health, openai_routes, usage_routes
from api.auth import CachedClientKeys, KeyStoreUnavailable, Unauthorized
from api.errors import InvalidRequest
from api.jobs import QueueFull
from api.limits import ActorLimited, BodyTimeout, BodyTooLarge, Limits
from api.state import ApiState
from api.stream_hub import StreamHub
from api.unexpected import UnexpectedErrors
from shared.byok import UpstreamKeyCipher
from shared.client_keys import ClientKeyStore
from shared.config import Settings
from shared.errors import error_object
from shared.keys import RedisKeys
from shared.metrics import ApiMetrics
from shared.recording.store import RecordStore
from shared.redis import connect, wait_until_answers
from shared.redis_url import describe_redis
from shared.upstream import OpenAIUpstream, new_session

logger = logging.getLogger(__name__)


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
            upstream=OpenAIUpstream(session, settings),
            streams=streams,
            metrics=ApiMetrics(),
            limits=Limits.of(settings),
            cipher=UpstreamKeyCipher(settings.secret_key) if settings.secret_key is not None else None,
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

    app = FastAPI(title="aibridge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(openai_routes.router)
    app.include_router(health.router)
    app.include_router(usage_routes.router)
    app.add_middleware(UnexpectedErrors)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_: Request, exc: InvalidRequest) -> Response:
        body = error_object(exc.message, "invalid_request_error", "invalid_request")
        body["error"]["param"] = exc.param
        return JSONResponse(body, 400)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> Response:
        body = error_object(
            f"the gateway is overloaded ({exc.depth} requests waiting); try again shortly",
            "server_error",
            "queue_full",
        )
        return JSONResponse(body, 503, headers={"Retry-After": "2"})

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> Response:
        body = error_object(exc.message, "invalid_request_error", "invalid_api_key")
        return JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_: Request, exc: BodyTooLarge) -> Response:
        message = f"the request body is larger than this gateway accepts ({exc.limit} bytes)"
        body = error_object(message, "invalid_request_error", "request_too_large")
        return JSONResponse(body, 413, headers={"Connection": "close"})  # the rest of the body is not read

    @app.exception_handler(BodyTimeout)
    async def body_timeout(_: Request, exc: BodyTimeout) -> Response:
        body = error_object(
            f"the request body did not arrive within {exc.seconds:g} seconds",
            "invalid_request_error",
            "request_timeout",
        )
        return JSONResponse(body, 408, headers={"Connection": "close"})

    @app.exception_handler(ActorLimited)
    async def actor_limited(_: Request, exc: ActorLimited) -> Response:
        body = error_object(exc.message, "requests", exc.code)
        return JSONResponse(body, 429, headers={"Retry-After": str(exc.retry_after)})

    app.add_exception_handler(RedisError, _unavailable("the gateway's queue is", "queue_unavailable"))
    app.add_exception_handler(
        KeyStoreUnavailable, _unavailable("the gateway's client keys are", "keys_unavailable")
    )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        body = error_object(str(exc.detail), "invalid_request_error", code)
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_object(str(exc), "invalid_request_error", "invalid_request"), 400)

    return app


def _unavailable(subject: str, code: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The handler of an outage of something the gateway depends on (``subject``: "the gateway's queue
    is"): 503 with Retry-After."""

    async def handler(_: Request, exc: Exception) -> Response:
        logger.warning("%s: %s", code, type(exc.__cause__ or exc).__name__)
        body = error_object(f"{subject} unavailable", "server_error", code)
        return JSONResponse(body, 503, headers={"Retry-After": "5"})

    return handler
