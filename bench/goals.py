"""The targets of ``bench.run`` (issue 17's), each judged met or not met from one run's figures: differences
and ratios against the direct run of the same family in the same run, never against another day's."""

from __future__ import annotations

import math
from typing import Any

from bench.stats import ms, number, ratio, verdict

Found = dict[tuple[str, int], dict[str, Any]]

ADDED_TTFT_P50 = {1: 0.0015, 100: 0.003}  # concurrency: the most the gateway may add to TTFT p50
ADDED_TTFT_P99 = {100: 0.010}
CPU_PER_CHUNK = 25e-6  # seconds of API + worker(s) + Redis CPU per relayed chunk, at CPU_CONCURRENCY
CPU_CONCURRENCY = 1000
CHUNKS_PER_S = 50_000  # relayed at CPU_CONCURRENCY
STEADY_CONCURRENCY = 500  # no errors and slowdown p99 within STEADY_SLOWDOWN here
STEADY_SLOWDOWN = 2.0
MCP_ROUND = 0.003  # what an injected tool round may add beyond its upstream time
RSS_PER_STREAM_KIB = 50.0  # at CPU_CONCURRENCY, from the run's start
OWN_RUNS = ("aibridge", "aibridge-2w")


def added(result: dict[str, Any], direct: dict[str, Any] | None, metric: str, p: str) -> float:
    """The run's percentile minus the direct run's at the same concurrency (NaN without it)."""
    if direct is None:
        return math.nan
    return result[metric][p] - direct[metric][p]


def gateway_cpu_per_chunk(result: dict[str, Any]) -> float:
    """Seconds of the gateway's CPU (API, worker(s) and Redis) per relayed chunk."""
    per_thousand = result["cpu_per_1000_chunks"]
    return sum(per_thousand.get(role, math.nan) for role in ("api", "workers", "redis")) / 1000


def mcp_round_extra(found: Found, concurrency: int) -> float:
    """What the tool round adds to the time to the answer's first chunk, beyond the upstream's own time for
    it (the tool-calling answer after its first chunk, then the second answer's TTFT): aibridge-mcp's TTFT
    p50 less aibridge's, less that upstream time. The MCP call itself is in it (the bench's tool answers at
    once, so its round trip counts against the gateway)."""
    mcp, plain = found.get(("aibridge-mcp", concurrency)), found.get(("aibridge", concurrency))
    if mcp is None or plain is None:
        return math.nan
    # the tool answer's TTFT and chunks: its chunks after the first, then the answer's TTFT (the same TTFT)
    upstream_time = mcp["nominal_seconds"] - plain["nominal_seconds"]
    return mcp["ttft"]["p50"] - plain["ttft"]["p50"] - upstream_time


def target_lines(found: Found, title: str) -> list[str]:
    lines = [f"#### Targets: {title}", "", "| target | run | N | figure | |", "|---|---|---:|---|---|"]

    def row(target: str, run: str, n: int, figure: str, ok: bool | None) -> None:
        lines.append(f"| {target} | {run} | {n} | {figure} | {verdict(ok)} |")

    for run in OWN_RUNS:
        for n, limit in ADDED_TTFT_P50.items():
            if (r := found.get((run, n))) is not None:
                value = added(r, found.get(("direct", n)), "ttft", "p50")
                row(
                    f"added TTFT p50 ≤ {ms(limit)} ms", run, n, f"{ms(value, True)} ms", _within(value, limit)
                )
        for n, limit in ADDED_TTFT_P99.items():
            if (r := found.get((run, n))) is not None:
                value = added(r, found.get(("direct", n)), "ttft", "p99")
                row(
                    f"added TTFT p99 ≤ {ms(limit)} ms", run, n, f"{ms(value, True)} ms", _within(value, limit)
                )
        if (r := found.get((run, CPU_CONCURRENCY))) is not None:
            cpu = gateway_cpu_per_chunk(r)
            figure = f"{number(cpu * 1e6, 1)} µs ({_roles(r)})"
            row(
                f"CPU per relayed chunk ≤ {CPU_PER_CHUNK * 1e6:g} µs",
                run,
                CPU_CONCURRENCY,
                figure,
                _within(cpu, CPU_PER_CHUNK),
            )
            row(
                f"≥ {CHUNKS_PER_S:,} chunks/s relayed",
                run,
                CPU_CONCURRENCY,
                f"{number(r['chunks_per_s'])} chunks/s",
                r["chunks_per_s"] >= CHUNKS_PER_S,
            )
            rss = r["rss_per_stream_from_start_kib"]
            row(
                f"≤ {RSS_PER_STREAM_KIB:g} KiB RSS per open stream (API + worker(s)), from the run's start",
                run,
                CPU_CONCURRENCY,
                f"{number(rss, 1)} KiB ({number(r['rss_per_stream_kib'], 1)} KiB over the idle before the phase)",
                _within(rss, RSS_PER_STREAM_KIB),
            )
        if (r := found.get((run, STEADY_CONCURRENCY))) is not None:
            slowdown = r["slowdown"]["p99"]
            ok = r["all_errors"] == 0 and _within(slowdown, STEADY_SLOWDOWN)
            figure = f"{r['all_errors']} errors in {r['all_streams']} streams, slowdown p99 {ratio(slowdown)}"
            row(f"0 errors, slowdown p99 ≤ {STEADY_SLOWDOWN:g}x", run, STEADY_CONCURRENCY, figure, ok)
    for n in sorted({n for run, n in found if run == "aibridge-mcp"}):
        extra = mcp_round_extra(found, n)
        row(
            f"an MCP tool round adds ≤ {ms(MCP_ROUND)} ms",
            "aibridge-mcp",
            n,
            f"{ms(extra, True)} ms",
            _within(extra, MCP_ROUND),
        )
    for n in sorted({n for run, n in found if run == "litellm"}):
        litellm, direct = found[("litellm", n)], found.get(("direct", n))
        for run in OWN_RUNS:
            if (r := found.get((run, n))) is None:
                continue
            ours, theirs = added(r, direct, "ttft", "p50"), added(litellm, direct, "ttft", "p50")
            figure = (
                f"{ms(ours, True)} vs {ms(theirs, True)} ms; {number(r['chunks_per_s'])} vs "
                f"{number(litellm['chunks_per_s'])} chunks/s"
            )
            more = r["chunks_per_s"] > litellm["chunks_per_s"]
            if math.isnan(theirs):  # LiteLLM completed no measured stream: chunks/s alone decide
                figure += " (LiteLLM: no measured stream completed)"
                ok = more and not math.isnan(ours)
            else:
                ok = ours < theirs and more
            row("lower added TTFT p50 and more chunks/s than LiteLLM", run, n, figure, ok)
    return lines


def _within(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def _roles(result: dict[str, Any]) -> str:
    per_thousand = result["cpu_per_1000_chunks"]
    names = {"api": "API", "workers": "worker(s)", "redis": "Redis"}
    return ", ".join(
        f"{label} {number(per_thousand.get(role, math.nan) * 1000, 1)}" for role, label in names.items()
    )
