"""The provider as one job calls it: the job's headers bound to every call, and each call's outcome reported
to the circuit of the job's provider endpoint and model (shared/breaker.py), with the job's next stream write."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiohttp

from shared.breaker import STATE_VALUES, BreakerSettings, outcome_of, report
from shared.upstream import UpstreamFailure
from worker.job_stream import JobStream

logger = logging.getLogger(__name__)

CircuitSeen = Callable[[float, bool], None]
"""Takes what a report made of the circuit: its state (0, 0.5, 1) and whether this report opened it."""


class Upstream(Protocol):
    """The provider's HTTP API (shared/upstream.py)."""

    def post(
        self,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        on_key: Callable[[str], None] | None = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]: ...

    def keyless(self, headers: Mapping[str, str] | None) -> str | None: ...


class CircuitReports:
    def __init__(self, stream: JobStream, key: str, settings: BreakerSettings, seen: CircuitSeen) -> None:
        self._stream = stream
        self._key = key
        self._settings = settings
        self._seen = seen

    def called(self, failure: UpstreamFailure | None) -> None:
        outcome = outcome_of(failure)
        if outcome is not None and self._settings.enabled:
            self._stream.send_later(report(self._key, outcome, self._settings), self._take_reply)

    def _take_reply(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            logger.warning("reporting to the circuit %s failed: %s", self._key, reply)
            return
        state, opened = (part.decode() for part in reply)
        if opened == "1":
            logger.warning("circuit %s opened: the provider keeps failing", self._key)
        self._seen(STATE_VALUES[state], opened == "1")


class JobUpstream:
    def __init__(self, upstream: Upstream, headers: dict[str, str], circuit: CircuitReports) -> None:
        self._upstream = upstream
        self._headers = headers
        self._circuit = circuit

    def post(
        self, path: str, body: dict[str, Any], on_key: Callable[[str], None] | None = None
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST to the provider; ``on_key`` learns the hint of the pooled key that answered."""
        return self._upstream.post(path, body, self._headers, on_key)

    def keyless(self) -> str | None:
        """Why the provider refused a call that carried no key at all (shared/upstream.py), else None."""
        return self._upstream.keyless(self._headers)

    def called(self, failure: UpstreamFailure | None) -> None:
        """One upstream call ended: answered (None), or with ``failure``."""
        self._circuit.called(failure)
