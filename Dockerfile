# syntax=docker/dockerfile:1
# One image, two entry points: `lagpilot-operator` (default) and `lagpilot-consumer` (worker pods).
# Stage 1 builds the wheel; stage 2 installs only that wheel and its runtime dependencies.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lagpilot/ lagpilot/
COPY operator/ operator/
COPY consumer/ consumer/
RUN pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 65532 lagpilot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lagpilot
COPY --from=build /dist/ /tmp/dist/
# Runtime dependencies only (no test extra); confluent-kafka's manylinux wheel bundles librdkafka.
RUN pip install /tmp/dist/*.whl && rm -rf /tmp/dist \
 && lagpilot-operator --help >/dev/null && lagpilot-consumer --help >/dev/null
# Numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8090 8091
ENTRYPOINT ["lagpilot-operator"]
