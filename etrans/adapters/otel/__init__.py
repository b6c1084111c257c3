"""OpenTelemetry: the spans of the tracing port exported over OTLP/HTTP (the ``otel`` extra)."""
