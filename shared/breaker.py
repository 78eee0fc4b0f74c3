"""The circuit breaker of each provider's endpoint (its API family) and model, one for every API instance and
worker: its state is a Redis hash, so that a provider that is down trips it once for the whole deployment,
not once per process while the others keep sending it load.

Closed, it counts the upstream's overload answers (503, 504, 529) and the calls that could not reach it or
timed out, in a row with no more than ``window`` between two: ``threshold`` of them open it for
``open_for``. Open, the API refuses its requests before queueing them (in the enqueue's round trip,
api/jobs.py). Then half-open: ``probes`` requests go through; all of them answered and it closes, one more
failure and it opens again. A 429 counts for neither: it is one key's limit (the key pool's business), and
any other answer is a success, which resets the count. Workers report each upstream call with the stream
write that follows it: no round trip of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.config import Settings
from shared.redis import Command
from shared.upstream import GatewayFailure, UpstreamCut, UpstreamFailure

Outcome = Literal["ok", "fail"]
OVERLOADED = frozenset({503, 504, 529})
UNREACHABLE = frozenset({"upstream_unreachable", "upstream_timeout"})  # GatewayFailure codes
STATE_VALUES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}  # of the state metric

# KEYS: the circuit; ARGV: outcome, threshold, window ms, open ms, probes. Returns the state after it, and
# whether this report opened the circuit ('1').
REPORT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_ms = tonumber(ARGV[4])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local function open()
  redis.call('HSET', KEYS[1], 'open_until', now + open_ms, 'probes', 0, 'passed', 0, 'failures', 0)
  redis.call('PEXPIRE', KEYS[1], open_ms * 3)
  return {'open', '1'}
end
if ARGV[1] == 'fail' then
  if open_until > 0 then
    if now >= open_until then return open() end
    return {'open', '0'}
  end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_failure') or '0')
  if now - last > tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'failures', 0) end
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'last_failure', now)
  if failures >= tonumber(ARGV[2]) then return open() end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'closed', '0'}
end
if open_until > 0 then
  if now < open_until then return {'open', '0'} end
  if redis.call('HINCRBY', KEYS[1], 'passed', 1) >= tonumber(ARGV[5]) then
    redis.call('DEL', KEYS[1])
    return {'closed', '0'}
  end
  return {'half_open', '0'}
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[1]) end
return {'closed', '0'}
"""

# Run inside the enqueue script (api/jobs.py), once every limit has passed; KEYS[7]: the circuit; ARGV[12]:
# probes (0: no breaker), ARGV[13]: open ms. Refuses with {'circuit_open', ms until a retry may pass}.
ADMIT_FRAGMENT = """
local probes = tonumber(ARGV[12])
if probes > 0 then
  local open_until = tonumber(redis.call('HGET', KEYS[7], 'open_until') or '0')
  if open_until > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now < open_until then return {'circuit_open', open_until - now} end
    local admitted = tonumber(redis.call('HGET', KEYS[7], 'probes') or '0')
    if admitted >= probes and now - open_until < tonumber(ARGV[13]) then return {'circuit_open', 1000} end
    if admitted >= probes then redis.call('HSET', KEYS[7], 'probes', 0) end
    redis.call('HINCRBY', KEYS[7], 'probes', 1)
  end
end
"""


@dataclass(frozen=True)
class BreakerSettings:
    threshold: int  # 0: no breaker
    window: float
    open_for: float
    probes: int

    @classmethod
    def of(cls, settings: Settings) -> BreakerSettings:
        return cls(
            settings.circuit_failure_threshold,
            settings.circuit_failure_window,
            settings.circuit_open_time,
            settings.circuit_probes,
        )

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


def outcome_of(failure: UpstreamFailure | None) -> Outcome | None:
    """What an upstream call that ended with ``failure`` (None: it was answered) says of the provider: a
    failure for an overload or a call that never reached it, nothing for a 429 or a cut stream."""
    if failure is None:
        return "ok"
    if isinstance(failure, UpstreamCut):
        return None
    if isinstance(failure, GatewayFailure):
        return "fail" if failure.problem[2] in UNREACHABLE else None
    if failure.status in OVERLOADED:
        return "fail"
    return None if failure.status == 429 else "ok"


def report(circuit_key: str, outcome: Outcome, settings: BreakerSettings) -> Command:
    """The command that reports one upstream call's outcome to the circuit (see REPORT_SCRIPT)."""
    return (
        b"EVAL",
        REPORT_SCRIPT,
        1,
        circuit_key,
        outcome,
        settings.threshold,
        int(settings.window * 1000),
        int(settings.open_for * 1000),
        settings.probes,
    )
