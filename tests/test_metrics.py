"""Prometheus metrics on the API (/metrics) and on the worker's metrics port, after a known workload."""

from __future__ import annotations

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from shared.local import free_port
from shared.metrics import BoundedLabel
from tests.fake_upstream import RawReply, SSEReply, text_stream, tool_call_stream

HI = [{"role": "user", "content": "hi"}]
USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 5,
    "total_tokens": 55,
    "prompt_tokens_details": {"cached_tokens": 20},
}


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx2.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_a_known_workload(make_gateway, upstream, mcp_http_url):
    port = free_port()
    servers = f'[{{"name": "test", "url": "{mcp_http_url}"}}]'
    deployment = make_gateway(AIBRIDGE_WORKER_METRICS_PORT=str(port), AIBRIDGE_MCP_SERVERS=servers)
    model, _ = upstream.scenario(SSEReply(text_stream(["a", "b", "c"], usage=USAGE)))
    for user_agent in ("python-httpx/1", "python-httpx/1", "OpenAI/Python 3.57.0"):
        httpx2.post(
            f"{deployment.base_url}/chat/completions",
            json={"model": model, "messages": HI, "stream": True},
            headers={"User-Agent": user_agent},
        )
    failing, _ = upstream.scenario(
        RawReply(500, b'{"error": {"message": "boom", "type": "server_error", "code": null}}')
    )
    httpx2.post(
        f"{deployment.base_url}/chat/completions", json={"model": failing, "messages": HI}, timeout=10
    )
    tooled, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_fail", '{"message": "x"}')), SSEReply(text_stream(["ok"]))
    )
    httpx2.post(
        f"{deployment.base_url}/chat/completions", json={"model": tooled, "messages": HI, "stream": True}
    )

    worker_url = f"http://127.0.0.1:{port}/metrics"
    deployment.wait_until(
        lambda: (
            samples(worker_url).get(("aibridge_recorder_written_total", ())) is not None
            and samples(worker_url)[("aibridge_recorder_written_total", ())] > 0
        ),
        "the recorder's first batch",
    )
    worker = samples(worker_url)
    chat = (("family", "openai_chat"), ("provider", "openai"))
    ok = (("family", "openai_chat"), ("model", model), ("outcome", "ok"), ("provider", "openai"))
    assert worker[("aibridge_interceptions_total", (("client", "unknown"), *ok))] == 2
    assert worker[("aibridge_interceptions_total", (("client", "openai-sdk"), *ok))] == 1
    errored = (
        ("client", "unknown"),
        ("family", "openai_chat"),
        ("model", failing),
        ("outcome", "upstream_error"),
        ("provider", "openai"),
    )
    assert worker[("aibridge_interceptions_total", errored)] == 1
    assert worker[("aibridge_tokens_total", (chat[0], ("kind", "input"), chat[1]))] == 3 * 30
    assert worker[("aibridge_tokens_total", (chat[0], ("kind", "cache_read"), chat[1]))] == 3 * 20
    assert worker[("aibridge_tokens_total", (chat[0], ("kind", "cache_write"), chat[1]))] == 0
    assert worker[("aibridge_tokens_total", (chat[0], ("kind", "output"), chat[1]))] == 3 * 5
    failed_call = (chat[0], ("outcome", "error"), chat[1], ("server", mcp_http_url), ("tool", "fail"))
    assert worker[("aibridge_tool_calls_total", failed_call)] == 1
    assert worker[("aibridge_queue_wait_seconds_count", ())] == 5
    assert worker[("aibridge_recorder_failures_total", ())] == 0

    api_url = f"{deployment.url}/metrics"
    deployment.wait_until(  # the count is the workers' own, announced with each heartbeat (0.5 s here)
        lambda: samples(api_url)[("aibridge_jobs_in_progress", ())] == 0, "the jobs' end announced", timeout=3
    )
    api = samples(api_url)
    assert api[("aibridge_live_workers", ())] == 1
    assert api[("aibridge_queue_depth", ())] == 0
    assert api[("aibridge_time_to_first_chunk_seconds_count", ())] == 5
    assert (
        api[("aibridge_relay_lag_seconds_count", ())] == 3 * 4 + 3
    )  # 3 streams of 3 chunks and [DONE] (no usage chunk: not asked for); the tool stream: role, "ok", [DONE]
    assert (
        api[("aibridge_relay_lag_seconds_bucket", (("le", "1.0"),))]
        == api[("aibridge_relay_lag_seconds_count", ())]
    )


def test_model_labels_chosen_by_clients_stay_bounded(make_gateway):
    port = free_port()
    deployment = make_gateway(AIBRIDGE_WORKER_METRICS_PORT=str(port), AIBRIDGE_METRICS_MAX_LABEL_VALUES="3")
    models = ["m" * 2000, *(f"client-chosen-{n}" for n in range(7))]  # the upstream knows none: 404s
    for model in models:
        httpx2.post(
            f"{deployment.base_url}/chat/completions", json={"model": model, "messages": HI}, timeout=10
        )
    worker_url = f"http://127.0.0.1:{port}/metrics"

    def by_model() -> dict[str, float]:
        return {
            dict(labels)["model"]: value
            for (name, labels), value in samples(worker_url).items()
            if name == "aibridge_interceptions_total"
        }

    deployment.wait_until(lambda: sum(by_model().values()) == len(models), "every interception counted")
    assert by_model() == {"client-chosen-0": 1, "client-chosen-1": 1, "client-chosen-2": 1, "other": 5}


def test_bounded_label_keeps_the_operators_list_or_the_first_values():
    listed = BoundedLabel(["gpt-4.1"], limit=1)
    assert [listed(name) for name in ("gpt-4.1", "gpt-5", "gpt-4.1")] == ["gpt-4.1", "other", "gpt-4.1"]
    first = BoundedLabel(limit=2, max_length=10)
    names = ["a", "x" * 11, "b", "c", "a", "b"]
    assert [first(name) for name in names] == ["a", "other", "b", "other", "a", "b"]
