"""OpenTelemetry tracing, exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces variant) is set.

The spans are the reference's: ``Intercept.ProcessRequest`` in the API, and in the worker, as its children
(the trace context travels in the job), ``Intercept.ProcessRequest.Upstream`` per upstream call and
``Intercept.ProcessRequest.ToolCall`` per injected tool call; the worker's carry ``interception_attributes``.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from shared.job import InterceptionJob

TRACER = "aibridge"


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install an exporting tracer provider for this process if an OTLP endpoint is configured; without one,
    spans cost next to nothing (OpenTelemetry's no-op tracer)."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def interception_attributes(job: InterceptionJob) -> dict[str, str | bool]:
    """The attributes of an interception's spans: its id, API family, provider, model and streaming."""
    return {
        "interception_id": job.interception_id,
        "family": str(job.family),
        "provider": job.provider,
        "model": str(job.body.get("model")),
        "streaming": job.streaming,
    }
