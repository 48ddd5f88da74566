# syntax=docker/dockerfile:1
# The serving image, in two targets:
#   cpu (the default): docker build -t onnx-classifier-serving:cpu .
#   gpu:               docker build --target gpu -t onnx-classifier-serving:gpu .
# Base images are build arguments, so the same file builds on a locally made base (the tests do).
# No torch, no compilers and no pip in the final stages: a builder stage makes the virtualenv.
ARG BASE_IMAGE=python:3.11-slim-bookworm
# The gpu target's base: the same Python base by default (CUDA and cuDNN come as pip wheels, see gpu-cuda).
ARG GPU_BASE_IMAGE=${BASE_IMAGE}

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
# CUDA and cuDNN come as NVIDIA's pip wheels (about 2.1 GB), in a stage of their own that is built again only
# when the base or CUDA_WHEELS changes (the container test keeps it between runs). The wheels are downloaded
# into a cache mount that outlives the build (pip's own HTTP cache stays empty under podman here), so a rebuild
# downloads nothing but the index pages.
# The base's own CUDA instead: CUDA_WHEELS= (empty) on a GPU_BASE_IMAGE that has CUDA 13, cuDNN 9 and Python.
FROM ${GPU_BASE_IMAGE} AS gpu-cuda
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
ARG CUDA_WHEELS="onnxruntime-gpu[cuda,cudnn]>=1.31"
RUN --mount=type=cache,target=/var/cache/wheels,sharing=locked \
    if [ -n "${CUDA_WHEELS}" ]; then \
        /opt/venv/bin/pip download --dest /var/cache/wheels "${CUDA_WHEELS}" \
        && /opt/venv/bin/pip install --no-index --find-links /var/cache/wheels "${CUDA_WHEELS}"; \
    fi

# ---------------------------------------------------------------------------------------------------------
FROM gpu-cuda AS gpu-builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model_repository model_repository
COPY app app
# pip and setuptools leave the virtualenv once it is made: the final stage installs nothing.
RUN /opt/venv/bin/pip install '.[gpu]' \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS gpu
COPY --from=gpu-builder /opt/venv /opt/venv
COPY models /app/models
# uid 1000, group 0: platforms that run images under a random uid keep group 0, and everything the
# service reads is world-readable. Nothing is written but /tmp. The NVIDIA Container Toolkit mounts the
# driver (libcuda.so.1, nvidia-smi) into containers whose environment asks for it.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
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
