"""Limits on what one request or one actor may take: the body size, concurrent requests, requests per minute.

The per-actor limits are counted in Redis, by the script that queues the job (api/jobs.py), so they hold
across API instances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import Request

from api.errors import GatewayError
from shared.config import Settings


class BodyTooLarge(GatewayError):
    """The request body is over ``max_body_bytes`` (HTTP 413); the rest of it is not read."""

    def __init__(self, limit: int) -> None:
        message = f"the request body is larger than this gateway accepts ({limit} bytes)"
        super().__init__(413, message, "invalid_request_error", "request_too_large", {"Connection": "close"})


class BodyTimeout(GatewayError):
    """The request body did not arrive within ``body_timeout`` seconds (HTTP 408)."""

    def __init__(self, seconds: float) -> None:
        message = f"the request body did not arrive within {seconds:g} seconds"
        super().__init__(408, message, "invalid_request_error", "request_timeout", {"Connection": "close"})


class ActorLimited(GatewayError):
    """The actor is at its concurrency or per-minute limit (HTTP 429, ``Retry-After`` seconds)."""

    def __init__(self, message: str, code: str, retry_after: int) -> None:
        super().__init__(429, message, "requests", code, {"Retry-After": str(retry_after)})


@dataclass(frozen=True)
class Limits:
    """What the enqueue script enforces (0: no limit), and how long what it takes for a request lasts."""

    max_queue_depth: int = 0
    max_concurrent_per_actor: int = 0
    requests_per_minute_per_actor: int = 0
    slot_lease: float = 60.0  # seconds, until a worker's heartbeats take over renewing the slot
    lifetime: float = 3600.0  # seconds the longest interception lasts: its owner record's ttl
    circuit_probes: int = 0  # requests a half-open circuit lets through (0: no circuit breaker)
    circuit_open_time: float = 30.0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_queue_depth=settings.max_queue_depth,
            max_concurrent_per_actor=settings.max_concurrent_per_actor,
            requests_per_minute_per_actor=settings.requests_per_minute_per_actor,
            slot_lease=settings.pickup_timeout + settings.slot_lease,
            lifetime=settings.pickup_timeout + settings.job_timeout + settings.stream_retention,
            circuit_probes=settings.circuit_probes if settings.circuit_failure_threshold else 0,
            circuit_open_time=settings.circuit_open_time,
        )


async def read_body(request: Request, limit: int, max_seconds: float) -> bytes:
    """The request body; BodyTooLarge as soon as it is known to exceed ``limit`` bytes: from its
    Content-Length before reading anything, or while reading a body sent without one; BodyTimeout if the
    whole body takes longer than ``max_seconds`` to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(max_seconds):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise BodyTooLarge(limit)
    except TimeoutError:
        raise BodyTimeout(max_seconds) from None
    return bytes(body)
