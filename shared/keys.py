"""Names of every Redis key and channel the gateway uses, under one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    @property
    def queue(self) -> str:
        """arq's queue (a sorted set of job ids)."""
        return f"{self.prefix}queue"

    @property
    def pending(self) -> str:
        """List of job ids not yet taken: workers block on it (see worker/pickup.py)."""
        return f"{self.prefix}pending"

    @property
    def control(self) -> str:
        """Pub/sub channel on which the API asks workers to cancel interceptions."""
        return f"{self.prefix}control"

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> time of its last heartbeat (epoch seconds)."""
        return f"{self.prefix}workers"

    @property
    def records(self) -> str:
        """Stream of usage records waiting for the database (see shared/recording/outbox.py)."""
        return f"{self.prefix}records"

    @property
    def open_interceptions(self) -> str:
        """Hash: interception id -> the worker running it, from its started record to its ended one."""
        return f"{self.prefix}recording:open"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    @property
    def api_wake(self) -> str:
        """Prefix of each API process's wake-up stream (see api/stream_hub.py)."""
        return f"{self.prefix}api-wake:"

    def stream(self, interception_id: str) -> str:
        return f"{self.prefix}stream:{interception_id}"

    def resumed(self, interception_id: str) -> str:
        """Counts the connections that resumed the interception's stream (see ``resume_grace``)."""
        return f"{self.prefix}resumed:{interception_id}"

    def cancelled(self, interception_id: str) -> str:
        return f"{self.prefix}cancelled:{interception_id}"

    def owner(self, interception_id: str) -> str:
        """The actor id that made the interception: only it may resume the stream."""
        return f"{self.prefix}owner:{interception_id}"

    def background(self, interception_id: str) -> str:
        """A background response's record (shared/background.py): who made it, and its first object."""
        return f"{self.prefix}background:{interception_id}"

    def response_alias(self, response_id: str) -> str:
        """The upstream response a response id the client was shown stands for, when they differ (after
        gateway tool rounds, and for background responses): what ``previous_response_id`` continues from."""
        return f"{self.prefix}response-alias:{response_id}"

    def key_pool(self, provider: str) -> str:
        """Hash of a provider's key pool (shared/key_pool.py): key fingerprint -> "disabled" or the epoch ms
        its cooling ends, and ``next``, the round robin's turn."""
        return f"{self.prefix}key-pool:{provider}"

    def circuit(self, provider: str, family: str, model: str) -> str:
        """The circuit breaker of one provider's endpoint (API family) and model (shared/breaker.py)."""
        return f"{self.prefix}circuit:{provider}:{family}:{model}"

    def actor_slots(self, actor_id: str | None) -> str:
        """Sorted set of the actor's running interceptions, each scored by when its slot lapses (epoch ms)
        unless a heartbeat renews it. Without client keys every request is one anonymous actor's."""
        return f"{self.prefix}slots:{_actor(actor_id)}"

    def actor_requests(self, actor_id: str | None) -> str:
        """The actor's request count in the current one-minute window (it expires with the window)."""
        return f"{self.prefix}rpm:{_actor(actor_id)}"


def _actor(actor_id: str | None) -> str:
    return "anonymous" if actor_id is None else f"actor:{actor_id}"
