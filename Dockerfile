# syntax=docker/dockerfile:1
# The serving image, in two targets:
#   cpu (the default): docker build -t onnx-classifier-serving:cpu .
#   gpu:               docker build --target gpu -t onnx-classifier-serving:gpu .
# Base images are build arguments, so the same file builds on a locally made base (the tests do).
# No torch, no compilers and no pip in the final stages: a builder stage makes the virtualenv.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG GPU_BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS cpu-builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY model_repository model_repository
COPY app app
# pip and setuptools leave the virtualenv once it is made: the final stage installs nothing.
RUN /opt/venv/bin/pip install '.[cpu]' \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS gpu-builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
# The distribution's Python (3.12 on Ubuntu 24.04); the runtime stage installs the same one. Not pinned
# (DL3008): Ubuntu replaces point releases in its archive, so a pin breaks the build; the base tag pins Ubuntu.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY model_repository model_repository
COPY app app
# pip and setuptools leave the virtualenv once it is made: the final stage installs nothing.
RUN /opt/venv/bin/pip install '.[gpu]' \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=gpu-builder /opt/venv /opt/venv
COPY models /app/models
# uid 1000, group 0: platforms that run images under a random uid keep group 0, and everything the
# service reads is world-readable. Nothing is written but /tmp.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SERVE_HOST=0.0.0.0 SERVE_PORT=8000 SERVE_GRPC_PORT=8001 SERVE_MODELS_DIR=/app/models SERVE_PROVIDERS=auto
WORKDIR /app
USER 1000:0
# HTTP (REST), and gRPC (the Open Inference Protocol): 8000 and 8001, as Triton and KServe.
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python3", "-m", "app.healthcheck"]
CMD ["python3", "-m", "app"]

# ---------------------------------------------------------------------------------------------------------
# The default target comes last.
FROM ${BASE_IMAGE} AS cpu
COPY --from=cpu-builder /opt/venv /opt/venv
COPY models /app/models
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SERVE_HOST=0.0.0.0 SERVE_PORT=8000 SERVE_GRPC_PORT=8001 SERVE_MODELS_DIR=/app/models
WORKDIR /app
USER 1000:0
# HTTP (REST), and gRPC (the Open Inference Protocol): 8000 and 8001, as Triton and KServe.
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python3", "-m", "app.healthcheck"]
CMD ["python3", "-m", "app"]
