"""Gateway benchmark: aibridge against the upstream called directly and against LiteLLM's proxy, at rising
concurrency.

    python -m bench.run [--quick] [--family chat|anthropic|responses|both|all]
                        [--concurrency 1,10,100,500,1000]
                        [--runs direct,aibridge,aibridge-2w,litellm,aibridge-mcp] [--seconds S] [--out DIR]
                        [--litellm-python PATH]

Starts the fake upstream (``bench.fake_upstream``: 50 ms to the first chunk, then 100 chunks 10 ms apart) and
the load generator (``bench.loadgen``, one process per 500 concurrent streams), then for each API family (chat
completions, Anthropic Messages, OpenAI Responses; ``both``: the first two; ``all``, the default: the three)
and each run (see ``bench.targets``) its processes, and for each concurrency N one phase: N closed-loop
clients (each starts its next stream when its previous one ended), their first starts spread evenly over one
stream's duration; the streams started in that first duration are the warm-up, the ones started in the next
``--seconds`` are measured (followed to their end, the clients still running meanwhile), and the chunks and
completed streams inside that window give the throughput. Meanwhile the CPU time of every process (from
/proc/<pid>/stat over the window) and its resident memory (VmRSS every 100 ms over the phase, and just before
it) are taken.

Prints the markdown tables on stdout (progress on stderr) and writes ``results.json``, ``tables.md`` and
``overview.png`` into ``--out`` (default ``bench/results/<UTC time>/``). Only 127.0.0.1 is contacted; every
process is stopped in ``finally`` blocks (also on SIGTERM), and every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.litellm_proxy import Unavailable
from bench.loadgen import LoadGen, Phase
from bench.processes import (
    HOST,
    ROOT,
    Processes,
    cpu_seconds,
    log,
    raise_open_files_limit,
    redis_server,
    rss_kib,
    stop_on_sigterm,
    wait_for_http,
)
from bench.report import machine, summarize, tables
from bench.targets import FAMILIES, RUNS, Deployments, Target, Upstream, request_body, unsupported
from shared.local import free_port

RSS_INTERVAL = 0.1
SETTLE = 0.3  # seconds between phases
START_DELAY = 0.2  # from sending a phase to its first client's start
FAMILY_GROUPS = {"both": ("chat", "anthropic"), "all": FAMILIES}


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    seconds: float  # measured, per phase
    chunks: int  # content chunks per answer
    stream_timeout: float  # one stream at most
    ttft: float = 0.05
    delay: float = 0.01
    clients_per_loadgen: int = 500


FULL = Plan(concurrency=(1, 10, 100, 500, 1000), seconds=10.0, chunks=100, stream_timeout=30.0)
QUICK = Plan(concurrency=(1, 10, 100), seconds=1.0, chunks=20, stream_timeout=10.0)


class Sampler:
    """Resident memory of every role's processes (summed per role), every RSS_INTERVAL, in a task."""

    def __init__(self, roles: dict[str, list[int]], gateway_roles: tuple[str, ...]) -> None:
        self.roles = roles
        self.gateway_roles = gateway_roles
        self.peak: dict[str, int] = dict.fromkeys(roles, 0)
        self.gateway_peak = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, int]:
        return {role: sum(map(rss_kib, pids)) for role, pids in self.roles.items()}

    async def _run(self) -> None:
        while True:
            now = self.sample()
            for role, kib in now.items():
                self.peak[role] = max(self.peak[role], kib)
            self.gateway_peak = max(self.gateway_peak, sum(now[role] for role in self.gateway_roles))
            await asyncio.sleep(RSS_INTERVAL)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def measure(
    target: Target,
    concurrency: int,
    plan: Plan,
    loadgen: LoadGen,
    common: dict[str, list[int]],
    gateway_start: int,
) -> dict[str, Any]:
    """One phase of ``concurrency`` closed-loop clients against ``target``; its summary (``gateway_start``:
    the gateway's memory before the run's first phase, KiB)."""
    await asyncio.sleep(SETTLE)
    roles = {**common, **target.roles}
    sampler = Sampler(roles, target.gateway_roles)
    idle = sampler.sample()
    warmup = target.nominal_seconds
    t0 = time.monotonic() + START_DELAY
    phase = Phase(
        host=HOST,
        port=target.port,
        path=target.path,
        family=target.family,
        body=request_body(target.family),
        min_events=plan.chunks,
        offsets=[index * warmup / concurrency for index in range(concurrency)],
        t0=t0,
        warmup=warmup,
        seconds=plan.seconds,
        timeout=plan.stream_timeout,
    )
    shards = loadgen.shards_for(concurrency, plan.clients_per_loadgen)
    sampler.start()
    try:
        await loadgen.send(phase, shards)
        await asyncio.sleep(max(0.0, t0 + warmup - time.monotonic()))
        before = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
        began = time.monotonic()
        await asyncio.sleep(max(0.0, t0 + warmup + plan.seconds - time.monotonic()))
        cpu = {role: sum(map(cpu_seconds, pids)) - before[role] for role, pids in roles.items()}
        wall = time.monotonic() - began
        # the measured streams' ends, then the clients' last streams: each at most stream_timeout
        raw = await loadgen.receive(shards, 2 * plan.stream_timeout + 30)
    finally:
        await sampler.stop()
    return summarize(
        target=target,
        concurrency=concurrency,
        raw=raw,
        seconds=plan.seconds,
        cpu=cpu,
        wall=wall,
        idle_rss=idle,
        peak_rss=sampler.peak,
        gateway_peak=sampler.gateway_peak,
        gateway_start=gateway_start,
        shards=len(shards),
    )


async def run(plan: Plan, families: list[str], runs: list[str], litellm_python: str | None) -> dict[str, Any]:
    began = time.monotonic()
    host = machine()  # its load average: before the run
    logdir = Path(tempfile.mkdtemp(prefix="aibridge-bench-run-"))
    processes = Processes(logdir)
    loadgen: LoadGen | None = None
    prefixes: list[str] = []
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    notes: dict[str, Any] = {}
    failed = True
    stop_on_sigterm()
    try:
        async with redis_server(None, logdir, prefixes) as redis:
            upstream = Upstream(free_port(), plan.ttft, plan.delay, plan.chunks)
            processes.spawn(
                "upstream",
                [
                    *("-m", "bench.fake_upstream", "--port", str(upstream.port)),
                    *("--ttft", str(plan.ttft), "--delay", str(plan.delay), "--chunks", str(plan.chunks)),
                ],
            )
            shard_count = -(-max(plan.concurrency) // plan.clients_per_loadgen)
            loadgen = await LoadGen.start(shard_count, logdir)
            await wait_for_http(f"{upstream.url}/models", "the fake upstream", processes)
            common = {
                "upstream": [processes.running["upstream"].pid],
                "load generator": loadgen.pids,
                "redis": await redis.pids(),
            }
            deployments = Deployments(
                processes, upstream, redis.url, prefixes, max(plan.concurrency), litellm_python
            )
            log(f"fake upstream and {shard_count} load generator(s) ready (logs in {logdir})")
            for family, name in ((family, name) for family in families for name in runs):
                reason = unsupported(name, family)
                try:
                    if reason is not None:
                        raise Unavailable(reason)
                    target = await deployments.start(name, family)
                except Unavailable as exc:
                    skipped[f"{name} ({family})"] = str(exc)
                    log(f"{name} ({family}): skipped: {exc}")
                    continue
                try:
                    notes.update(target.notes)
                    await deployments.warm_up(target)
                    gateway_start = sum(
                        rss_kib(pid) for role in target.gateway_roles for pid in target.roles[role]
                    )
                    for concurrency in plan.concurrency:
                        summary = await measure(target, concurrency, plan, loadgen, common, gateway_start)
                        results.append(summary)
                        log(
                            f"{name} ({family}) at {concurrency}: {summary['streams']} streams measured, "
                            f"{summary['all_errors']} errors in all {summary['all_streams']}, "
                            f"TTFT p50 {summary['ttft']['p50'] * 1000:.1f} ms, "
                            f"{summary['chunks_per_s']:.0f} chunks/s"
                        )
                        processes.check()
                finally:
                    deployments.stop(target)
            failed = False
    finally:
        if failed:
            processes.log_tails()
        if loadgen is not None:
            await loadgen.stop()
        processes.stop_all()
        shutil.rmtree(logdir, ignore_errors=True)
    return {
        "plan": plan.__dict__,
        "families": families,
        "runs": runs,
        "skipped": skipped,
        "notes": notes,
        "machine": host,
        "commit": git_commit(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() - (time.monotonic() - began))),
        "elapsed": time.monotonic() - began,
        "results": results,
    }


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 1,10,100, short phases, 20 chunks")
    parser.add_argument(
        "--concurrency", help="comma-separated concurrency levels (default 1,10,100,500,1000)"
    )
    parser.add_argument(
        "--family",
        choices=(*FAMILIES, *FAMILY_GROUPS),
        default="all",
        help="API family: chat completions, Anthropic Messages, OpenAI Responses, both (chat and anthropic) "
        "or all three one after the other (default all)",
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase (default 10; --quick 1)")
    parser.add_argument("--out", type=Path, help="where results go (default bench/results/<UTC time>/)")
    parser.add_argument("--litellm-python", help="a Python with litellm[proxy] (default .bench/litellm-venv)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.concurrency:
        plan = Plan(**{**plan.__dict__, "concurrency": tuple(int(c) for c in parse_list(args.concurrency))})
    if args.seconds:
        plan = Plan(**{**plan.__dict__, "seconds": args.seconds})
    runs = parse_list(args.runs)
    if unknown := sorted(set(runs) - set(RUNS)):
        parser.error(f"unknown run(s): {', '.join(unknown)}")
    if "direct" not in runs:
        runs.insert(0, "direct")  # the added latencies are against it
    out = args.out or ROOT / "bench" / "results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    import uvloop

    families = list(FAMILY_GROUPS.get(args.family, (args.family,)))
    try:
        document = uvloop.run(run(plan, families, runs, args.litellm_python))
    except asyncio.CancelledError:
        log("stopped before the end (SIGTERM)")
        return 1
    (out / "results.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    text = tables(document)
    (out / "tables.md").write_text(text)
    from bench.plot import plot

    png = plot(document, out / "overview.png")
    print(text)
    log(f"results in {out}; plot: {png}; took {document['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
