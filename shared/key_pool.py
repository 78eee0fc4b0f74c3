"""A provider's several central keys, shared by every worker through Redis: round robin over the keys that
are neither cooling (a 429, for the upstream's ``Retry-After``) nor disabled (a 401/403, until a worker
starts again). Redis holds each key's fingerprint (a hash), never the key."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

from pydantic import SecretStr
from redis.asyncio import Redis

from shared.metrics import KeyPoolMetrics
from shared.providers import Provider

logger = logging.getLogger(__name__)

DISABLED = "disabled"

# KEYS[1]: the pool's hash (fingerprint -> "disabled" or the epoch ms its cooling ends; "next": the turn).
# ARGV: the number of keys, their fingerprints in order, then the indexes this request already tried.
# Returns {index, 0, recovered} for the key to use, or {-1, ms until the soonest one is back (-1: every key
# disabled), recovered}; recovered: the keys seen back from cooling.
_PICK = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local count = tonumber(ARGV[1])
local tried = {}
for i = count + 2, #ARGV do tried[tonumber(ARGV[i])] = true end
local start = redis.call('HINCRBY', KEYS[1], 'next', 1)
local recovered, soonest = 0, -1
for step = 0, count - 1 do
  local index = (start + step) % count
  local fingerprint = ARGV[index + 2]
  local state = redis.call('HGET', KEYS[1], fingerprint)
  if state and state ~= 'disabled' and tonumber(state) <= now then
    redis.call('HDEL', KEYS[1], fingerprint)
    recovered = recovered + 1
    state = false
  end
  local wait = -1
  if not state then
    if not tried[index] then return {index, 0, recovered} end
    wait = 0
  elseif state ~= 'disabled' then
    wait = tonumber(state) - now
  end
  if wait >= 0 and (soonest < 0 or wait < soonest) then soonest = wait end
end
return {-1, soonest, recovered}
"""

# KEYS[1]: the pool's hash; ARGV: the fingerprint, then "disabled" or the ms it cools for. Returns 1 when the
# key changed state (it was usable, or cooling and is now disabled), 0 when it only cools longer or was so.
_MARK = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local previous = redis.call('HGET', KEYS[1], ARGV[1])
if previous == 'disabled' then return 0 end
local usable = not previous or tonumber(previous) <= now
if ARGV[2] == 'disabled' then
  redis.call('HSET', KEYS[1], ARGV[1], 'disabled')
  return 1
end
local until_ms = now + tonumber(ARGV[2])
if usable or tonumber(previous) < until_ms then redis.call('HSET', KEYS[1], ARGV[1], until_ms) end
return usable and 1 or 0
"""

# KEYS[1]: the pool's hash; ARGV: fingerprints. Drops their "disabled" marks; returns how many it dropped.
_ENABLE = """
local dropped = 0
for _, fingerprint in ipairs(ARGV) do
  if redis.call('HGET', KEYS[1], fingerprint) == 'disabled' then
    redis.call('HDEL', KEYS[1], fingerprint)
    dropped = dropped + 1
  end
end
return dropped
"""


class KeyOutcome(Enum):
    """What an upstream's answer says of the key that made the request."""

    KEPT = "kept"  # any answer that is not about the key: it goes to the client
    COOLING = "cooling"  # rate limited: the key waits for the upstream's Retry-After
    DISABLED = "disabled"  # refused: the key is not used again until a worker starts


def key_outcome(status: int) -> KeyOutcome:
    if status == 429:
        return KeyOutcome.COOLING
    if status in (401, 403):
        return KeyOutcome.DISABLED
    return KeyOutcome.KEPT


def retry_after(headers: Mapping[str, str], default: float) -> float:
    """Seconds the upstream asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP
    date), else ``default``."""
    if (ms := _number(headers.get("retry-after-ms"))) is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if (seconds := _number(value)) is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time()) if value else default
    except (TypeError, ValueError):
        return default


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def masked(key: str) -> str:
    """A hint that tells keys apart and gives none away: its prefix (``sk-``) and its last 4 characters."""
    if len(key) < 12:
        return "..."
    prefix, dash, _ = key.partition("-")
    shown = prefix + dash if dash and prefix.isalpha() and len(prefix) <= 4 else ""
    return f"{shown}...{key[-4:]}"


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class PooledKey:
    index: int
    key: SecretStr
    fingerprint: str
    hint: str


class KeysExhausted(Exception):
    """No key of the pool can be used now: ``retry_after`` seconds until the soonest is back, None when every
    key is disabled."""

    def __init__(self, retry_after: int | None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class KeyPool:
    def __init__(
        self, redis: Redis, redis_key: str, provider: Provider, cooldown: float, metrics: KeyPoolMetrics
    ) -> None:
        self.provider = provider
        self._redis = redis
        self._redis_key = redis_key
        self._cooldown = cooldown
        self._metrics = metrics
        self._keys = [
            PooledKey(index, key, fingerprint(key.get_secret_value()), masked(key.get_secret_value()))
            for index, key in enumerate(provider.keys)
        ]
        self._pick = redis.register_script(_PICK)
        self._mark = redis.register_script(_MARK)
        self._enable = redis.register_script(_ENABLE)

    async def enable_all(self) -> None:
        """A worker starting: the keys disabled before get another chance."""
        fingerprints = [each.fingerprint for each in self._keys]
        if dropped := await self._enable(keys=[self._redis_key], args=fingerprints):
            logger.info("provider %s: %d disabled key(s) enabled again", self.provider.name, dropped)
            self._metrics.transitions.labels(self.provider.name, "available").inc(dropped)

    async def pick(self, tried: list[PooledKey]) -> PooledKey:
        """The next usable key not in ``tried``; KeysExhausted when there is none."""
        args = [len(self._keys), *(each.fingerprint for each in self._keys), *(each.index for each in tried)]
        index, wait_ms, recovered = await self._pick(keys=[self._redis_key], args=args)
        if recovered:
            self._metrics.transitions.labels(self.provider.name, "available").inc(recovered)
        if index >= 0:
            if tried:
                self._metrics.failovers.labels(self.provider.name).inc()
            return self._keys[index]
        exhausted = KeysExhausted(max(1, math.ceil(wait_ms / 1000)) if wait_ms >= 0 else None)
        status = "503" if exhausted.retry_after is None else "429"
        self._metrics.exhaustions.labels(self.provider.name, status).inc()
        raise exhausted

    async def report(
        self, used: PooledKey, outcome: KeyOutcome, status: int, headers: Mapping[str, str]
    ) -> None:
        """Mark ``used`` as the upstream's answer (``status``, ``headers``) says: ``outcome``, not KEPT."""
        if outcome is KeyOutcome.COOLING:
            state = str(math.ceil(retry_after(headers, self._cooldown) * 1000))
        else:
            state = DISABLED
        if await self._mark(keys=[self._redis_key], args=[used.fingerprint, state]):
            self._metrics.transitions.labels(self.provider.name, outcome.value).inc()
            logger.warning(
                "provider %s: key %s is %s (the upstream answered %d)",
                self.provider.name,
                used.hint,
                outcome.value,
                status,
            )
