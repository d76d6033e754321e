# syntax=docker/dockerfile:1
#
# dvn-serve image: one engine per device and its front ends, serving the shipped
# standard checkpoint (the demo one beside it for quick runs).
#
# CPU (default):
#   docker build -t dvn-serve:cpu .
# CUDA (torch's CUDA wheels bring their own CUDA libraries; the base image
# supplies the user-space driver hooks for the NVIDIA container toolkit):
#   docker build -t dvn-serve:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --gpus all -p 8000:8000 dvn-serve:cuda
# The CUDA tag of TORCH_INDEX must be one PyTorch publishes for TORCH_VERSION.
# See docs/deploy.md.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- base: a Python >= 3.11 with venv, shared by both stages so the venv's
# interpreter symlink resolves identically in the runtime stage.
FROM ${BASE_IMAGE} AS base
# python:*-slim already has python3; CUDA (Ubuntu) bases do not. The distro
# decides the package version, and the base image tag pins the distro.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c "import sys; assert sys.version_info >= (3, 11), 'dvn-serve needs Python >= 3.11; pick a newer BASE_IMAGE'"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- builder: a venv with torch first (its own cached layer), then the project.
FROM base AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dvn/ dvn/
COPY model_store/ model_store/
COPY server/ server/
COPY clients/ clients/
COPY bench/ bench/
# Non-editable: the runtime stage gets the venv only, not /src.
RUN pip install --no-cache-dir .
# EXTRAS=ray: the image of the Ray head and workers (docker-compose's ray profile,
# deploy/ray/rayservice.yaml), with the project's `ray` extra.
ARG EXTRAS=""
# hadolint ignore=DL3013  # the project itself, its extra's versions bounded in pyproject.toml
RUN if [ -n "${EXTRAS}" ]; then pip install --no-cache-dir ".[${EXTRAS}]"; fi

# ---- runtime: the venv, the shipped checkpoints, a non-root user.
FROM base AS runtime
RUN groupadd --gid 10001 dvn \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 dvn
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The package data in the venv carries the checkpoint too; this copy keeps
# the shipped checkpoints at a known path for --checkpoint.
COPY --chown=10001:10001 model_store/checkpoints/standard /app/model_store/checkpoints/standard
COPY --chown=10001:10001 model_store/checkpoints/demo /app/model_store/checkpoints/demo
ENV PATH=/opt/venv/bin:$PATH
USER 10001:10001
EXPOSE 8000
# Slim images have no curl: urllib raises on any non-2xx, so a 503 from
# /readyz (loading, warming up, draining) marks the container unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["dvn", "serve", "--host", "0.0.0.0", "--port", "8000"]
