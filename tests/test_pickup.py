"""Job pickup: every job starts at once, also when requests arrive while the worker is claiming others."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx2

from tests.fake_upstream import RawReply
from tests.test_blocking import completion

HI = [{"role": "user", "content": "hi"}]


def test_concurrent_arrivals_are_all_picked_up_without_waiting_for_the_sweep(gateway, upstream):
    model, scenario = upstream.scenario(RawReply(200, completion("ok")))

    def client_loop(_: int) -> list[float]:
        took = []
        with httpx2.Client(timeout=10) as client:
            for _ in range(10):
                started = time.monotonic()
                response = client.post(
                    f"{gateway.base_url}/chat/completions", json={"model": model, "messages": HI}
                )
                assert response.status_code == 200
                took.append(time.monotonic() - started)
        return took

    with ThreadPoolExecutor(20) as pool:
        durations = [d for took in pool.map(client_loop, range(20)) for d in took]
    assert len(scenario.received) == 200
    # a job left to the fallback sweep waits 0.5 to 1.5 s
    assert max(durations) < 0.45, sorted(durations)[-5:]
