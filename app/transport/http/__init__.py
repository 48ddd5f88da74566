"""The HTTP transport: the FastAPI application, its routes (`/predict`, the Open Inference Protocol v2,
health, models, metrics) as thin calls into the data plane, middleware, head limits, the API key's extraction,
the errors' HTTP statuses and bodies, request bodies, the API docs and, when tracing is on, its middleware.
"""
