"""The data plane: what the service does for a request, whatever transport carried it.

Plain functions and one small class (`DataPlane`) on typed values: `/predict`'s classification, the Open
Inference Protocol v2's inference, metadata, configuration and readiness, the model repository's load and
unload, and the access check every transport calls with the key it was given. Nothing here knows HTTP: the
transports (`app.transport`) parse their wire format into these values, call the data plane, encode its answer
and map its errors (`app.errors`) to their status codes.
"""
