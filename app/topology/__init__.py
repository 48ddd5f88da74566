"""How the service runs as processes: one, several workers on one port, or workers feeding one inference
process; what they share (readiness, metrics directory), the link to the inference process, and the SIGTERM
intake stop.
"""
