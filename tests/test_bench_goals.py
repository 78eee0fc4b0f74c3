"""bench/goals.py's verdicts on hand-made phase summaries (pure logic: no process starts)."""

from __future__ import annotations

import math
from typing import Any

from bench.goals import mcp_round_extra, target_lines


def phase(ttft_p50: float, ttft_p99: float = 0.0, **extra: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "ttft": {"p50": ttft_p50, "p99": ttft_p99},
        "chunks_per_s": 1000.0,
        "nominal_seconds": 1.04,
        "all_errors": 0,
        "all_streams": 10,
        "slowdown": {"p99": 1.0},
        "cpu_per_1000_chunks": {"api": 0.01, "workers": 0.01, "redis": 0.002},
        "rss_per_stream_kib": 30.0,
        "rss_per_stream_from_start_kib": 40.0,
    }
    summary.update(extra)
    return summary


def verdicts(lines: list[str]) -> dict[tuple[str, str, str], str]:
    rows = [line.strip("|").split(" | ") for line in lines[4:]]
    return {(target.strip(), run, n): cells[-1].strip() for target, run, n, *cells in rows}


def test_ttft_targets_are_judged_against_the_direct_run_of_the_same_concurrency() -> None:
    found = {
        ("direct", 1): phase(0.050),
        ("aibridge", 1): phase(0.0514),  # +1.4 ms
        ("direct", 100): phase(0.050, 0.052),
        ("aibridge", 100): phase(0.0535, 0.061),  # +3.5 ms p50, +9 ms p99
    }
    judged = verdicts(target_lines(found, "Chat"))
    assert judged[("added TTFT p50 ≤ 1.5 ms", "aibridge", "1")] == "met"
    assert judged[("added TTFT p50 ≤ 3.0 ms", "aibridge", "100")] == "**not met**"
    assert judged[("added TTFT p99 ≤ 10.0 ms", "aibridge", "100")] == "met"


def test_cpu_memory_and_steady_targets() -> None:
    found = {
        ("aibridge", 1000): phase(4.0, chunks_per_s=60_000.0),  # 22 µs a chunk, 40 KiB from the start
        ("aibridge", 500): phase(0.06, slowdown={"p99": 2.5}),
    }
    judged = verdicts(target_lines(found, "Chat"))
    assert judged[("CPU per relayed chunk ≤ 25 µs", "aibridge", "1000")] == "met"
    assert judged[("≥ 50,000 chunks/s relayed", "aibridge", "1000")] == "met"
    memory = "≤ 50 KiB RSS per open stream (API + worker(s)), from the run's start"
    assert judged[(memory, "aibridge", "1000")] == "met"
    assert judged[("0 errors, slowdown p99 ≤ 2x", "aibridge", "500")] == "**not met**"


def test_the_mcp_round_is_what_remains_after_the_upstream_time_of_the_tool_round() -> None:
    found = {
        ("aibridge", 1): phase(0.055),
        ("aibridge-mcp", 1): phase(0.127, nominal_seconds=1.11),  # a 70 ms tool round, 2 ms beyond it
    }
    assert math.isclose(mcp_round_extra(found, 1), 0.002, abs_tol=1e-9)
    assert (
        verdicts(target_lines(found, "Chat"))[("an MCP tool round adds ≤ 3.0 ms", "aibridge-mcp", "1")]
        == "met"
    )
    assert math.isnan(mcp_round_extra(found, 100))


def test_a_litellm_phase_without_a_completed_stream_is_judged_by_chunks_per_second() -> None:
    found = {
        ("direct", 1000): phase(0.05),
        ("aibridge", 1000): phase(4.0),
        ("litellm", 1000): phase(math.nan, chunks_per_s=200.0),
        ("direct", 100): phase(0.05),
        ("aibridge", 100): phase(0.07),
        ("litellm", 100): phase(0.06, chunks_per_s=900.0),
    }
    judged = verdicts(target_lines(found, "Chat"))
    assert judged[("lower added TTFT p50 and more chunks/s than LiteLLM", "aibridge", "1000")] == "met"
    assert judged[("lower added TTFT p50 and more chunks/s than LiteLLM", "aibridge", "100")] == "**not met**"
