"""The HTTP transport: the FastAPI application, its routes (`/predict`, the Open Inference Protocol v2,
health, models, metrics), middleware, head limits, API-key checks, request bodies and the API docs.
"""
