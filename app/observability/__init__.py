"""What the service tells its operators: Prometheus metrics (summed over the worker processes when there are
several), the logs and OpenTelemetry traces (off unless the `OTEL_*` variables turn them on). Metrics observe
the service; nothing reads them back to decide.
"""
