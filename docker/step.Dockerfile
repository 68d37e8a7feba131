# syntax=docker/dockerfile:1
# The step image: `python -m mlsteps <step> ...` in a pod, on CPU and GPU nodes alike (xgboost's
# manylinux wheel carries CUDA support; the node's driver is mounted by the NVIDIA device plugin).
# Build from the repository root:
#   docker build -f docker/step.Dockerfile -t mlsteps:0.1.0 --build-arg GIT_SHA="$(git rev-parse HEAD)" .

FROM python:3.11.14-slim-trixie AS build
# Installs into a virtual environment that the runtime stage copies whole: no compiler, pip cache
# or sources end up in the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
COPY include/pyproject.toml include/pyproject.toml
COPY include/mlsteps include/mlsteps
# Every dependency is pinned by the repository's lock file (constraints.txt).
RUN pip install --no-cache-dir -c constraints.txt ./include

FROM python:3.11.14-slim-trixie
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="mlsteps" \
      org.opencontainers.image.description="Steps of the scheduled ML workflows (python -m mlsteps)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
# uid/gid 10001 matches the pod securityContext the task factory sets (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 mlsteps \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin mlsteps
COPY --from=build /opt/venv /opt/venv
# Fixed paths, identical in the Airflow image: the worker forwards ML_PIPELINE_CONFIG and
# ML_FEAST_STORE_YAML to the pods, so a path valid there must be valid here.
COPY include/config /opt/mlsteps/config
COPY include/feature_repo /opt/mlsteps/feature_repo
# The root filesystem is read-only in a pod: everything that writes goes to /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    ML_STATE_DIR=/tmp/mlsteps-state \
    ML_PIPELINE_CONFIG=/opt/mlsteps/config/pipeline.yaml \
    ML_FEAST_STORE_YAML=/opt/mlsteps/feature_repo/feature_store.production.yaml \
    ML_GIT_SHA=${GIT_SHA}
WORKDIR /tmp
USER 10001:10001
# No ENTRYPOINT: the pod's exec-form `cmds: [python, -m, mlsteps]` replaces this default command.
CMD ["python", "-m", "mlsteps", "--help"]
