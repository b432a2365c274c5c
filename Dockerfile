# syntax=docker/dockerfile:1.7
# Tauon's three images, from one Dockerfile:
#
#   docker build --target operator -t ghcr.io/tauon-dev/tauon-operator:0.1.0 .   # kopf, no torch
#   docker build --target runtime  -t ghcr.io/tauon-dev/tauon-runtime:0.1.0 .    # torch 2.14.1
#   docker build --target runtime --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker build --target runtime-edge -t ghcr.io/tauon-dev/tauon-runtime-edge:0.1.0 .  # onnxruntime, no torch
#
# Pins: pyproject.toml (the runtime), docker/requirements-operator.txt (the operator) and
# docker/requirements-edge.txt (the edge server), the last two generated from pyproject's pins
# by docker/lock-operator.py. Every final stage runs as the numeric, non-root user 65532 with
# no compiler, no pip and no build tools.

ARG PYTHON_IMAGE=docker.io/library/python:3.11.7-slim-bookworm

# ---------------------------------------------------------------- build: the project's wheel
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- the operator's environment
FROM ${PYTHON_IMAGE} AS operator-env
COPY docker/install.sh docker/requirements-operator.txt /docker/
COPY --from=build /wheels /wheels
RUN /docker/install.sh operator /opt/tauon /wheels

# ---------------------------------------------------------------- the runtime's environment
FROM ${PYTHON_IMAGE} AS runtime-env
ARG TORCH_INDEX_URL=""
COPY docker/install.sh docker/requirements-operator.txt /docker/
COPY --from=build /wheels /wheels
RUN PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}" /docker/install.sh runtime /opt/tauon /wheels

# ---------------------------------------------------------------- the edge server's environment
FROM ${PYTHON_IMAGE} AS runtime-edge-env
COPY docker/install.sh docker/requirements-edge.txt /docker/
COPY --from=build /wheels /wheels
RUN /docker/install.sh edge /opt/tauon /wheels

# ---------------------------------------------------------------- what the final images share
FROM ${PYTHON_IMAGE} AS base
# The base image's own installer goes too: nothing in the final images can install anything.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && rm -rf /root/.cache /tmp/*
ENV PATH=/opt/tauon/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
LABEL org.opencontainers.image.source="https://github.com/tauon-dev/tauon" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
WORKDIR /tmp

# ---------------------------------------------------------------- target: operator
FROM base AS operator
COPY --from=operator-env /opt/tauon /opt/tauon
LABEL org.opencontainers.image.title="tauon-operator"
USER 65532:65532
EXPOSE 8000 8081
ENTRYPOINT ["tauon-operator"]
CMD ["run"]

# ---------------------------------------------------------------- target: runtime
FROM base AS runtime
COPY --from=runtime-env /opt/tauon /opt/tauon
LABEL org.opencontainers.image.title="tauon-runtime"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["tauon-runtime"]

# ---------------------------------------------------------------- target: runtime-edge
# `tauon-runtime serve` with modelFormat onnx: onnxruntime on CPU, no torch (docs/edge.md).
FROM base AS runtime-edge
COPY --from=runtime-edge-env /opt/tauon /opt/tauon
LABEL org.opencontainers.image.title="tauon-runtime-edge"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["tauon-runtime"]
CMD ["serve"]
