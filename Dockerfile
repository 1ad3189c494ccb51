# The lvm-rollout operator image: `lvm-rollout operator` on a slim Python 3.11 base, non-root.
#
#   docker build -t lvm-rollout:0.1.0 .
#   docker run --rm lvm-rollout:0.1.0 --help
#
# The Helm chart (charts/lvm-rollout) runs it with a read-only root filesystem, a writable /tmp,
# as UID/GID 10001, with all capabilities dropped.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lvm-rollout
ENV PATH=/opt/lvm-rollout/bin:$PATH
WORKDIR /src
# The project depends on torch (serving's model families); the operator only runs a model in its
# offline-evaluation child processes, on CPU, so take the CPU-only wheel (a far smaller image).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.6,<3"
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY serving ./serving
RUN pip install . && python -m compileall -q /opt/lvm-rollout

FROM python:3.11-slim
LABEL org.opencontainers.image.title="lvm-rollout" \
      org.opencontainers.image.description="Kopf operator for progressive LVM rollouts on Ray Serve" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 lvm \
 && useradd --system --uid 10001 --gid lvm --no-create-home --home-dir /tmp --shell /usr/sbin/nologin lvm
COPY --from=build /opt/lvm-rollout /opt/lvm-rollout
ENV PATH=/opt/lvm-rollout/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
# Kopf's liveness endpoint (/healthz) and the operator's Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["lvm-rollout", "operator"]
CMD ["--all-namespaces", "--liveness-port", "8080", "--metrics-port", "9090"]
