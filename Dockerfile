# syntax=docker/dockerfile:1
# Targets: `api` (no TensorFlow), `worker-cpu` (TensorFlow for CPUs) and `worker` (CUDA
# TensorFlow for GPU hosts).

FROM python:3.11-slim AS api
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY core core
COPY models models
COPY worker worker
COPY netkiln netkiln
COPY uploads uploads
RUN pip install --no-cache-dir .
ENV NETKILN_DATA_DIR=/data
EXPOSE 8000
CMD ["netkiln", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM python:3.11-slim AS worker-cpu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY core core
COPY models models
COPY worker worker
COPY netkiln netkiln
COPY uploads uploads
RUN pip install --no-cache-dir ".[worker]"
ENV NETKILN_DATA_DIR=/data TF_CPP_MIN_LOG_LEVEL=2
CMD ["netkiln", "worker", "--gpus", "none"]

FROM python:3.11-slim AS worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY core core
COPY models models
COPY worker worker
COPY netkiln netkiln
COPY uploads uploads
RUN pip install --no-cache-dir ".[gpu]"
ENV NETKILN_DATA_DIR=/data TF_CPP_MIN_LOG_LEVEL=2
# One pool process per GPU the container sees (nvidia-smi), pinned to it.
CMD ["netkiln", "worker", "--gpus", "auto"]
