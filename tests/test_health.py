"""Liveness and readiness, as an orchestrator probes them."""

from __future__ import annotations

import httpx2


def test_ready_follows_the_live_workers(make_gateway):
    deployment = make_gateway(workers=1)
    assert httpx2.get(f"{deployment.url}/healthz").json() == {"status": "ok"}
    ready = httpx2.get(f"{deployment.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] == 1
    worker = deployment.workers[0]
    worker.terminate()
    worker.wait(10)
    gone = httpx2.get(f"{deployment.url}/readyz")  # a worker that stops deregisters itself
    assert gone.status_code == 503
    assert gone.json() == {"status": "unready", "redis": True, "workers": 0}


def test_a_killed_worker_stops_counting_after_the_heartbeat_timeout(make_gateway):
    deployment = make_gateway(workers=1)
    deployment.workers[0].kill()
    assert httpx2.get(f"{deployment.url}/readyz").status_code == 200
    deployment.wait_until(
        lambda: httpx2.get(f"{deployment.url}/readyz").status_code == 503, "the worker to expire", timeout=6
    )
