"""What the service tells its operators: Prometheus metrics (summed over the worker processes when there are
several), among them the model-quality series of each version's answers against its reference (quality.py),
the logs and OpenTelemetry traces (off unless the `OTEL_*` variables turn them on). Metrics observe the
service; nothing reads them back to decide.
"""
