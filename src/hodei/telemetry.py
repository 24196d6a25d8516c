"""OpenTelemetry set-up shared by the server and the agent: where spans go (an OTLP gRPC
endpoint), the tracer that sends them there in batches, and W3C `traceparent` strings read
and written. Imported only when tracing is on: with no endpoint, nothing here is loaded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlparse

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARS = ("HODEI_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()


def endpoint_from_env(env: Mapping[str, str]) -> str:
    """The OTLP endpoint named by the environment ("" when tracing is off)."""
    for name in ENDPOINT_VARS:
        if value := env.get(name, "").strip():
            return value
    return ""


def make_tracer(
    service: str, endpoint: str, instance: str = ""
) -> tuple[Tracer, Callable[[], None]]:
    """A tracer whose spans go to `endpoint` in batches (a BatchSpanProcessor: ending a span
    costs a queue append, the export runs in its own thread), and the function that sends
    what is left and stops it. `http://` or no scheme: plaintext; `https://`: TLS."""
    scheme = urlparse(endpoint).scheme if "://" in endpoint else ""
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=scheme != "https")
    attributes = {"service.name": service}
    if instance:
        attributes["service.instance.id"] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("hodei"), provider.shutdown


def context_of(traceparent: str | None) -> Context | None:
    """The context a W3C `traceparent` names (None when absent or not valid)."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if get_current_span(context).get_span_context().is_valid else None


def traceparent_of(span: Span) -> str:
    """The W3C `traceparent` of `span` ("" when it is not recording a valid context)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, set_span_in_context(span))
    return carrier.get("traceparent", "")
