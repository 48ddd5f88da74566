"""How the service runs as processes, chosen once at start-up from the settings (`topology.choose_topology`):
one, several workers on one port, or workers feeding one inference process. Each server process is handed its
role (`roles`); what the workers share (readiness board, metrics directory, the warm-up timing turn), how each
process makes its models (`model_factories`), the link to the inference process, and the SIGTERM intake stop.
"""
