# syntax=docker/dockerfile:1
# The erasure worker's container image: `docker build -t erasure-worker:0.2.0 .`
# (the tag the Helm chart's default image uses is its appVersion, the project's version).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its dependencies (wheels only) under /install -----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
WORKDIR /src
COPY pyproject.toml README.md ./
# consumer/schemas is a symlink to ../schemas: both go in, or the Avro schemas are missing.
COPY schemas ./schemas
COPY consumer ./consumer
RUN pip install --prefix=/install .

# --- runtime: the slim base, the installed package, a non-root user -------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ERASURE_CONFIG=/etc/erasure-worker/config.yaml
RUN groupadd --system --gid 10001 erasure \
 && useradd --system --uid 10001 --gid erasure --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin erasure
COPY --from=build /install /usr/local
USER 10001:10001
# /metrics, /healthz, /readyz (config `http.port`)
EXPOSE 8000
ENTRYPOINT ["erasure-worker", "run"]
