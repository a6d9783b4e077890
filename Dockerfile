# syntax=docker/dockerfile:1
# Targets: `api` (no TensorFlow) and `worker` (CUDA TensorFlow for GPU hosts).

FROM python:3.11-slim AS api
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY models models
COPY worker worker
COPY netkiln netkiln
RUN pip install --no-cache-dir .
ENV NETKILN_DATA_DIR=/data
EXPOSE 8000
CMD ["netkiln", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM python:3.11-slim AS worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY models models
COPY worker worker
COPY netkiln netkiln
RUN pip install --no-cache-dir ".[gpu]"
ENV NETKILN_DATA_DIR=/data TF_CPP_MIN_LOG_LEVEL=2
CMD ["netkiln", "worker", "--concurrency", "1"]
