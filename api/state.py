"""What the API's routes share, built in the app's lifespan and reached through the request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import aiohttp
from arq.connections import ArqRedis
from fastapi import Depends, Request

from api.limits import Limits
from api.stream_hub import StreamHub
from shared.byok import UpstreamKeyCipher
from shared.config import Settings
from shared.keys import RedisKeys
from shared.metrics import ApiMetrics
from shared.providers import Provider


@dataclass
class ApiState:
    settings: Settings
    keys: RedisKeys
    redis: ArqRedis
    session: aiohttp.ClientSession  # to the upstream providers (api/passthrough.py)
    streams: StreamHub
    metrics: ApiMetrics
    limits: Limits
    cipher: UpstreamKeyCipher | None  # None: no AIBRIDGE_SECRET_KEY, no bring-your-own-key
    providers: dict[str, Provider]  # by name

    async def live_workers(self) -> int:
        since = time.time() - self.settings.heartbeat_timeout
        return await self.redis.zcount(self.keys.workers, since, "+inf")


async def api_state(request: Request) -> ApiState:  # async: a sync dependency would run in a thread
    return request.app.state.aibridge


State = Annotated[ApiState, Depends(api_state)]
