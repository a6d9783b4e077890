# syntax=docker/dockerfile:1
# Targets: `api` (no TensorFlow), `worker-cpu` (TensorFlow for CPUs) and `worker` (CUDA
# TensorFlow for GPU hosts); each installs the project from the `source` stage.

FROM python:3.11-slim AS source
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY core core
COPY models models
COPY worker worker
COPY netkiln netkiln
COPY uploads uploads
ENV NETKILN_DATA_DIR=/data

FROM source AS api
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["netkiln", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM source AS worker-cpu
RUN pip install --no-cache-dir ".[worker]"
ENV TF_CPP_MIN_LOG_LEVEL=2
CMD ["netkiln", "worker", "--gpus", "none"]

FROM source AS worker
RUN pip install --no-cache-dir ".[gpu]"
ENV TF_CPP_MIN_LOG_LEVEL=2
# One pool process per GPU the container sees (nvidia-smi), pinned to it.
CMD ["netkiln", "worker", "--gpus", "auto"]
