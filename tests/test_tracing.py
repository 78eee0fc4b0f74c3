"""Tracing: one trace from the API's request span through the worker's upstream and tool-call spans, as the
processes export it over OTLP to a receiver on loopback (a real exporter, not an in-memory one: the API and
the worker are separate processes)."""

from __future__ import annotations

import json

import httpx2

from tests.fake_upstream import SSEReply, text_stream, tool_call_stream
from tests.otlp_receiver import OtlpReceiver

HI = [{"role": "user", "content": "add"}]


def test_one_trace_spans_the_api_and_the_worker(make_gateway, upstream, mcp_http_url):
    receiver = OtlpReceiver().start()
    deployment = None
    try:
        deployment = make_gateway(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            AIBRIDGE_MCP_SERVERS=json.dumps([{"name": "test", "url": mcp_http_url}]),
        )
        model, _ = upstream.scenario(
            SSEReply(tool_call_stream("bmcp_test_add", '{"a": 2, "b": 2}')), SSEReply(text_stream(["4"]))
        )
        response = httpx2.post(
            f"{deployment.base_url}/chat/completions", json={"model": model, "messages": HI, "stream": True}
        )
        interception_id = response.headers["X-AIBridge-Interception-Id"]

        def mine() -> list:
            return [s for s in receiver.spans if s.attributes.get("interception_id") == interception_id]

        deployment.wait_until(lambda: len(mine()) >= 4, "four spans", timeout=10)
        spans = {(s.service, s.name): s for s in mine()}
        request = spans[("aibridge-api", "Intercept.ProcessRequest")]
        upstream_calls = [s for s in mine() if s.name == "Intercept.ProcessRequest.Upstream"]
        tool_call = spans[("aibridge-worker", "Intercept.ProcessRequest.ToolCall")]
        assert len(upstream_calls) == 2
        assert {s.trace_id for s in mine()} == {request.trace_id}
        assert all(s.parent_span_id == request.span_id for s in [*upstream_calls, tool_call])
        assert {s.service for s in upstream_calls} == {"aibridge-worker"}
        assert request.attributes["model"] == model and request.attributes["streaming"] is True
        for span in [request, *upstream_calls, tool_call]:
            assert (span.attributes["family"], span.attributes["provider"]) == ("openai_chat", "openai")
        assert tool_call.attributes["mcp.tool"] == "add"
        assert tool_call.attributes["mcp.server"] == mcp_http_url
    finally:
        if deployment is not None:
            deployment.stop()  # before the receiver, which takes the last spans the processes flush
        receiver.stop()
