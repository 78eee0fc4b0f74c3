"""``bench.run``'s figures: one phase's summary from the load generator's raw figures, and the markdown
tables of a whole run."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections import Counter
from typing import Any

from bench.goals import added, target_lines
from bench.loadgen import GAP_BUCKET
from bench.stats import histogram_percentile, ms, number, percentile, ratio
from bench.targets import DESCRIPTIONS, FAMILY_STREAMS, FAMILY_TITLES, Target

CPU_ROLES = ("upstream", "load generator", "redis", "api", "workers", "litellm", "mcp server")
ROLE_TITLES = {
    "upstream": "fake upstream",
    "load generator": "load generator",
    "redis": "Redis",
    "api": "API",
    "workers": "worker(s)",
    "litellm": "LiteLLM",
    "mcp server": "MCP server",
}


def summarize(
    *,
    target: Target,
    concurrency: int,
    raw: dict[str, Any],
    seconds: float,
    cpu: dict[str, float],
    wall: float,
    idle_rss: dict[str, int],
    peak_rss: dict[str, int],
    gateway_peak: int,
    gateway_start: int,
    shards: int,
) -> dict[str, Any]:
    """One phase: its streams' figures (the measured ones: started in the window), throughput in the window,
    CPU seconds per role over the window, and memory (KiB) per role before and during the phase;
    ``gateway_start``: the gateway's memory before the run's first phase."""
    every = raw["streams"]
    streams = [stream for stream in every if stream[5]]  # the measured ones
    good = [stream for stream in streams if stream[4] is None]
    ttft = [stream[1] for stream in good]
    completion = [stream[2] for stream in good]
    slowest = max((stream[2] for stream in every if stream[4] is None), default=math.nan)
    gaps = {int(bucket): count for bucket, count in raw["gaps"].items()}
    chunks = raw["window"]["chunks"]
    gateway_idle = sum(idle_rss[role] for role in target.gateway_roles)
    nominal = target.nominal_seconds
    return {
        "run": target.run,
        "family": target.family,
        "concurrency": concurrency,
        "seconds": seconds,
        "nominal_seconds": nominal,
        "load_generators": shards,
        "streams": len(streams),
        "errors": len(streams) - len(good),
        "all_streams": len(every),
        "all_errors": sum(stream[4] is not None for stream in every),
        "error_kinds": dict(Counter(stream[4] for stream in every if stream[4] is not None)),
        "ttft": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)},
        "gap": {p: histogram_percentile(gaps, GAP_BUCKET, q) for p, q in (("p50", 50), ("p99", 99))},
        "completion": {
            "p50": percentile(completion, 50),
            "p99": percentile(completion, 99),
            "max": max(completion, default=math.nan),
        },
        "slowdown": {
            "p99": percentile(completion, 99) / nominal,
            "max": max(completion, default=math.nan) / nominal,
            "max_all": slowest / nominal,
        },
        "streams_per_s": raw["window"]["completed"] / seconds,
        "chunks_per_s": chunks / seconds,
        "cpu_seconds": cpu,
        "cpu_per_1000_chunks": {
            role: used / (chunks / 1000) if chunks else math.nan for role, used in cpu.items()
        },
        "cpus_busy": sum(cpu.values()) / wall,
        "rss_idle_kib": idle_rss,
        "rss_peak_kib": peak_rss,
        "gateway_rss_idle_kib": gateway_idle,
        "gateway_rss_peak_kib": gateway_peak,
        "gateway_rss_start_kib": gateway_start,
        "rss_per_stream_kib": (gateway_peak - gateway_idle) / concurrency
        if target.gateway_roles
        else math.nan,
        "rss_per_stream_from_start_kib": (gateway_peak - gateway_start) / concurrency
        if target.gateway_roles
        else math.nan,
    }


def machine() -> dict[str, Any]:
    memory = "unknown"
    try:
        memory = subprocess.run(
            ["free", "-h"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu_model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": " ".join(memory.split()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def _index(document: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(result["run"], result["concurrency"]): result for result in document["results"]}


def family_of(result: dict[str, Any]) -> str:
    return result.get("family", "chat")  # results written before there were families


def tables(document: dict[str, Any]) -> str:
    """The run's markdown: a header, then the tables of each API family."""
    plan = document["plan"]
    families = document.get("families", ["chat"])
    runs = [run for run in document["runs"] if any(r["run"] == run for r in document["results"])]
    stream_ms = (plan["ttft"] + (plan["chunks"] - 1) * plan["delay"]) * 1000
    m = document["machine"]
    lines = [
        f"### Results ({document['started']}, commit `{document['commit']}`, {document['elapsed']:.0f} s)",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), memory `{m['memory']}`, kernel {m['kernel']}, "
        f"Python {m['python']}; load average before the run {m['load_average'][0]:.2f}.",
        "",
        f"Fake upstream: first chunk after {plan['ttft'] * 1000:.0f} ms, then {plan['chunks'] - 1} more "
        f"{plan['delay'] * 1000:.0f} ms apart: {stream_ms:.0f} ms per stream (nominal), in every family. "
        + " ".join(
            f"{FAMILY_TITLES[family]}: {FAMILY_STREAMS[family].format(chunks=plan['chunks'])}."
            for family in families
        )
        + " Each phase: N closed-loop clients, first starts spread over "
        f"one stream, {plan['seconds']:g} s measured after that warm-up. Times in ms; p99 is nearest-rank. "
        "*Added*: the run's percentile minus the direct run's of the same family at the same concurrency, in "
        "this run. aibridge-mcp's streams include one extra upstream round (a tool call, "
        f"{(plan['ttft'] + 2 * plan['delay']) * 1000:.0f} ms nominal) and the MCP call before the answer: "
        "its nominal duration includes the round, and its TTFT is the time to the first `data:` event the "
        "client gets, which is the tool round's usage chunk (relayed by the worker), not the answer's.",
        "",
        "Families: "
        + ", ".join(FAMILY_TITLES[family] for family in families)
        + ". Runs: "
        + "; ".join(f"**{run}**: {DESCRIPTIONS[run]}" for run in runs)
        + ".",
    ]
    for run, reason in document["skipped"].items():
        lines.append(f"Skipped **{run}**: {reason}.")
    if version := document["notes"].get("litellm_version"):
        lines.append(f"LiteLLM {version}.")
    for family in families:
        mine = {**document, "results": [r for r in document["results"] if family_of(r) == family]}
        if mine["results"]:
            lines += family_lines(mine, FAMILY_TITLES[family])
    return "\n".join(lines) + "\n"


def family_lines(document: dict[str, Any], title: str) -> list[str]:
    """The tables of one family's results (``document["results"]``: that family's only)."""
    plan, found = document["plan"], _index(document)
    concurrencies = sorted({result["concurrency"] for result in document["results"]})
    runs = [run for run in document["runs"] if any(r["run"] == run for r in document["results"])]
    rows = [(c, run) for c in concurrencies for run in runs if (run, c) in found]
    m = document["machine"]
    lines: list[str] = []
    lines += [
        "",
        f"#### Latency: {title}",
        "",
        "Streams, errors: the measured ones (started in the window), and in brackets all the phase's streams "
        "(warm-up and the clients' last streams after the window included; a stream not done after "
        f"{plan['stream_timeout']:g} s is an error, `timeout`). TTFT, gap and completion: measured streams "
        "without error. Gap: the time between two chunks of a stream as the client reads them (chunks in the "
        "same read: 0). Slowdown: a stream's completion time over its nominal duration; p99 and max of the "
        "measured streams, and max of all the phase's streams that completed.",
        "",
        "| N | run | streams | errors | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | gap p50 "
        "| gap p99 | added gap p50 | added gap p99 | completion p50 | slowdown p99 | slowdown max "
        "| slowdown max, all |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, run in rows:
        r, direct = found[(run, c)], found.get(("direct", c))
        bold = "**" if run != "direct" else ""
        lines.append(
            f"| {c} | {run} | {r['streams']} ({r['all_streams']}) | {r['errors']} ({r['all_errors']}) "
            f"| {ms(r['ttft']['p50'])} | {ms(r['ttft']['p99'])} "
            f"| {bold}{ms(added(r, direct, 'ttft', 'p50'), True)}{bold} | {ms(added(r, direct, 'ttft', 'p99'), True)} "
            f"| {ms(r['gap']['p50'])} | {ms(r['gap']['p99'])} | {ms(added(r, direct, 'gap', 'p50'), True)} "
            f"| {ms(added(r, direct, 'gap', 'p99'), True)} | {ms(r['completion']['p50'])} "
            f"| {ratio(r['slowdown']['p99'])} | {ratio(r['slowdown']['max'])} | {ratio(r['slowdown']['max_all'])} |"
        )
    errors = [(r["run"], r["concurrency"], r["error_kinds"]) for r in document["results"] if r["error_kinds"]]
    if errors:
        lines += [
            "",
            "Errors (all streams): " + "; ".join(f"{run} at {c}: {kinds}" for run, c, kinds in errors),
        ]
    present = [role for role in CPU_ROLES if any(role in r["cpu_seconds"] for r in document["results"])]
    lines += [
        "",
        f"#### Throughput and CPU: {title}",
        "",
        "Completed streams and chunks (as defined above for each family) received by the clients inside the "
        "measured window, per second. CPU: seconds of CPU (user + system, /proc, 10 ms ticks) each process "
        "used over the window per 1,000 chunks received in it (`—`: not part of the run; the load generator "
        "and the fake upstream are the harness, Redis is shared with other users of the machine). CPUs busy: "
        f"all listed processes' CPU over the window's wall time, of {m['cpus']}.",
        "",
        "| N | run | streams/s | chunks/s | "
        + " | ".join(ROLE_TITLES[role] for role in present)
        + " | CPUs busy |",
        "|---:|---|---:|---:|" + "---:|" * len(present) + "---:|",
    ]
    for c, run in rows:
        r = found[(run, c)]
        per = r["cpu_per_1000_chunks"]
        cells = " | ".join(number(per[role], 3) if role in per else "—" for role in present)
        lines.append(
            f"| {c} | {run} | {number(r['streams_per_s'], 1)} | {number(r['chunks_per_s'])} | {cells} "
            f"| {r['cpus_busy']:.2f} |"
        )
    lines += [
        "",
        f"#### Memory: {title}",
        "",
        "Resident memory (VmRSS, MiB): the gateway's processes together (aibridge: API + worker(s); "
        "LiteLLM: its process), summed at each sample, at the run's start (before its first phase), just "
        "before the phase (idle) and at its peak during the phase, sampled every 100 ms. Per stream, in KiB: "
        "(peak - idle before the phase) / N, and (peak - at the run's start) / N, which also counts what "
        "earlier phases left allocated (meaningful from N = 100 up: at 1 and 10 it is a few pages' noise).",
        "",
        "| N | run | gateway at start | idle | peak | per stream | per stream, from start | API peak "
        "| worker(s) peak | LiteLLM peak | MCP server peak | fake upstream peak | load generator(s) peak |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, run in rows:
        r = found[(run, c)]
        peak = r["rss_peak_kib"]

        def mib(role: str, peak: dict[str, int] = peak) -> str:
            return f"{peak[role] / 1024:.0f}" if role in peak else "—"

        gateway = run != "direct"
        lines.append(
            f"| {c} | {run} | {r['gateway_rss_start_kib'] / 1024:.0f} | {r['gateway_rss_idle_kib'] / 1024:.0f} "
            f"| {r['gateway_rss_peak_kib'] / 1024:.0f} | {number(r['rss_per_stream_kib'], 1) if gateway else '—'} "
            f"| {number(r['rss_per_stream_from_start_kib'], 1) if gateway else '—'} | {mib('api')} | {mib('workers')} "
            f"| {mib('litellm')} | {mib('mcp server')} | {mib('upstream')} | {mib('load generator')} |"
        )
    lines += ["", *target_lines(found, title)]
    return lines
