"""The serving service: image and text classifiers on ONNX Runtime, with dynamic batching.

Packages by layer, each importing only those below it:
- `transport.http`: the FastAPI application, its routes, middleware, head limits and API docs;
- `models`: the registry and default models, loading a model, the request pipeline and the batcher;
- `topology`: one process, several workers, or workers feeding one inference process;
- `observability`: Prometheus metrics and logs.
`settings` (every knob, from `SERVE_*`) and `errors` (the service's errors) serve them all; `python -m app`
(`__main__`) starts the service. docs/architecture.md draws a request's path through them.
"""
