# syntax=docker/dockerfile:1
# The superpool image: `superpool runner` by default; the same image runs
# `superpool proxy --transport http` and `superpool provision`.
#
#   docker build -t superpool:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the bind mount in
# the final stage.

ARG PYTHON_IMAGE=python:3.11-slim

# Builder: the project's wheel and the wheels of all its dependencies.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY registry ./registry
COPY runner ./runner
COPY mcp_proxy ./mcp_proxy
COPY superpool ./superpool
RUN pip wheel --wheel-dir /wheels .

# Final: the installed wheels and nothing to build with.
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# A fixed UID and GID, so that the pod's runAsUser, runAsGroup and fsGroup
# (10001) name this user.
RUN groupadd --system --gid 10001 appuser \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin appuser
# The wheels are bind-mounted from the builder, so they never become a layer
# of this image. pip, setuptools and wheel go once the install is done.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels superagent-pool \
    && pip uninstall --yes pip setuptools wheel
# Set after the install, which compiles the bytecode; at run time the root
# filesystem is read-only.
ENV PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
# 9090: runner probes and metrics; 8765: the MCP proxy over HTTP.
EXPOSE 9090 8765
ENTRYPOINT ["superpool"]
CMD ["runner"]
