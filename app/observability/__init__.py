"""What the service tells its operators: Prometheus metrics (summed over the worker processes when there are
several) and the logs. Metrics observe the service; nothing reads them back to decide.
"""
