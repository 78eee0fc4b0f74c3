"""Prometheus metrics, one registry per process (no global registry for tests to patch)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shared.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    Record,
    TokenUsage,
    ToolUsage,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OTHER = "other"


class BoundedLabel:
    """The values of a label that clients choose (a model name, the name of a client's tool), kept to a
    bounded set so that no client can grow the metrics without end: the ``allowed`` values when the operator
    lists them, else the first ``limit`` distinct values of at most ``max_length`` characters; any other
    value is ``other``."""

    def __init__(self, allowed: Collection[str] = (), *, limit: int = 100, max_length: int = 100) -> None:
        self._allowed = frozenset(allowed)
        self._seen: set[str] = set()
        self._limit = limit
        self._max_length = max_length

    def __call__(self, value: str) -> str:
        if self._allowed:
            return value if value in self._allowed else OTHER
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit or len(value) > self._max_length:
            return OTHER
        self._seen.add(value)
        return value


class ApiMetrics:
    """What an API process reports: queue and worker state read from Redis (so every instance reports the
    same), and the latencies it sees relaying."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("aibridge_queue_depth", "Jobs waiting for a worker.", registry=self.registry)
        self.jobs_in_progress = Gauge(
            "aibridge_jobs_in_progress", "Jobs a worker is running.", registry=self.registry
        )
        self.live_workers = Gauge(
            "aibridge_live_workers",
            "Workers whose last heartbeat is within the timeout.",
            registry=self.registry,
        )
        self.time_to_first_chunk = Histogram(
            "aibridge_time_to_first_chunk_seconds",
            "From the request's arrival to the first byte of its answer (SSE start or JSON body).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.circuit_rejects = Counter(
            "aibridge_circuit_rejects_total",
            "Requests refused before queueing because their provider's circuit was open.",
            ["family", "provider"],
            registry=self.registry,
        )
        self.relay_lag = Histogram(
            "aibridge_relay_lag_seconds",
            "From a worker writing a stream entry to the API sending it to the client.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class KeyPoolMetrics:
    """The key pools' counters (shared/key_pool.py), labelled by provider, never by key."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "aibridge_upstream_key_transitions",
            "Central upstream keys entering a state (cooling, disabled, available), by provider.",
            ["provider", "state"],
            registry=registry,
        )
        self.failovers = Counter(
            "aibridge_upstream_key_failovers",
            "Upstream calls moved to another key after one was rate limited or refused, by provider.",
            ["provider"],
            registry=registry,
        )
        self.exhaustions = Counter(
            "aibridge_upstream_key_exhaustions",
            "Upstream calls refused because no key could be used (429: cooling, 503: disabled), by provider.",
            ["provider", "status"],
            registry=registry,
        )


class WorkerMetrics:
    """What a worker process reports. It is a Recorder too: it counts the records the interceptions make.

    Every counter is labelled by the interception's API family (shared/families.py) and provider (the
    gateway's, one per upstream it is configured with); the interceptions' also by client (a fixed set). Model names are labels only if they are among
    ``models`` (when given), else among the first ``max_label_values`` seen; so are the names of the clients'
    own tools (the injected tools' names come from the configured MCP servers)."""

    def __init__(
        self,
        recorder_counters: Callable[[], dict[str, int]],
        *,
        models: Collection[str] = (),
        max_label_values: int = 100,
    ) -> None:
        self._model_label = BoundedLabel(models, limit=max_label_values)
        self._client_tool_label = BoundedLabel(limit=max_label_values)
        self.registry = CollectorRegistry()
        self.queue_wait = Histogram(
            "aibridge_queue_wait_seconds",
            "From the API enqueuing a job to a worker starting it.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.interceptions = Counter(
            "aibridge_interceptions",
            "Interceptions ended, by family, provider, model, client (shared/clients.py) and outcome.",
            ["family", "provider", "model", "client", "outcome"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "aibridge_tokens",
            "Tokens reported by the upstream, by family, provider and kind.",
            ["family", "provider", "kind"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "aibridge_tool_calls",
            "Tool calls by family, provider, server (empty for the client's own tools), tool and outcome.",
            ["family", "provider", "server", "tool", "outcome"],
            registry=self.registry,
        )
        self.key_pools = KeyPoolMetrics(self.registry)
        self.circuit_state = Gauge(
            "aibridge_circuit_state",
            "A provider endpoint's circuit as this worker last saw it: 0 closed, 0.5 half-open, 1 open.",
            ["family", "provider", "model"],
            registry=self.registry,
        )
        self.circuit_trips = Counter(
            "aibridge_circuit_trips",
            "Circuits this worker's reports opened.",
            ["family", "provider", "model"],
            registry=self.registry,
        )
        self.registry.register(_RecorderCollector(recorder_counters))
        self._started: dict[str, _Started] = {}

    def circuit_seen(self, family: str, provider: str, model: str, state: float, opened: bool) -> None:
        labels = (family, provider, self._model_label(model))
        self.circuit_state.labels(*labels).set(state)
        if opened:
            self.circuit_trips.labels(*labels).inc()

    def record(self, record: Record) -> None:
        if isinstance(record, InterceptionStarted):
            self._started[record.interception_id] = _Started(
                str(record.family), record.provider, self._model_label(record.model), str(record.client)
            )
        elif isinstance(record, InterceptionEnded):
            started = self._started.pop(record.interception_id, _UNKNOWN)
            self.interceptions.labels(*started, record.outcome.value).inc()
        elif isinstance(record, TokenUsage):
            family, provider, *_ = self._started.get(record.interception_id, _UNKNOWN)
            for kind, count in (
                ("input", record.input),
                ("output", record.output),
                ("cache_read", record.cache_read_input),
                ("cache_write", record.cache_write_input),
            ):
                self.tokens.labels(family, provider, kind).inc(count)
        elif isinstance(record, ToolUsage):
            family, provider, *_ = self._started.get(record.interception_id, _UNKNOWN)
            outcome = "error" if record.invocation_error else "ok"
            tool = record.tool if record.injected else self._client_tool_label(record.tool)
            self.tool_calls.labels(family, provider, record.server_url or "", tool, outcome).inc()


class _Started(NamedTuple):
    """The labels of an interception under way, from its start record."""

    family: str
    provider: str
    model: str
    client: str


_UNKNOWN = _Started("", "", "", "")  # a record whose interception's start this process did not see


class _RecorderCollector(Collector):
    """The usage recorder's own counters (records written, dropped, database failures)."""

    def __init__(self, counters: Callable[[], dict[str, int]]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in self._counters().items():
            yield CounterMetricFamily(f"aibridge_recorder_{name}", f"Usage records {name}.", value=value)
