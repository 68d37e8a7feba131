# The Airflow image: the official image plus our providers, dags/, plugins/ and mlsteps.contract.config.
# Build from the repository root. Two targets:
#   airflow     (default) production: mlsteps is installed without its ML dependencies, because
#               DAG files and the report pages (plugins/ml_ui.py) need no ML library, and the steps
#               run in pods from docker/step.Dockerfile.
#   airflow-ml  docker-compose: the full ML stack too, so steps run as local subprocesses.
#   docker build -f docker/airflow.Dockerfile -t mlsteps-airflow:0.1.0 .
#   docker build -f docker/airflow.Dockerfile --target airflow-ml -t mlsteps-airflow-ml:0.1.0 .
# Build args:
#   AIRFLOW_IMAGE    the base image (default: the official one at our Airflow pin)
#   EXTRA_CA_CERTS   optional PEM text of extra CA certificates that pip trusts during the build only,
#                    for networks that intercept TLS: --build-arg EXTRA_CA_CERTS="$(cat my-ca.pem)"
#   GIT_SHA          the commit, recorded for lineage (ML_GIT_SHA)
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

FROM ${AIRFLOW_IMAGE} AS base
ARG EXTRA_CA_CERTS=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/mlsteps/
# The official image installs into the airflow user's site-packages; our lock file pins Airflow,
# the providers and everything they pull in to the versions the test suite ran with.
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && pip install --no-cache-dir -c /opt/mlsteps/constraints.txt -r /opt/mlsteps/requirements.txt \
    && rm -f /tmp/build-ca.pem
COPY --chown=airflow:0 include/pyproject.toml /opt/mlsteps/src/pyproject.toml
# Same fixed paths as the step image (the worker forwards these variables to the pods).
COPY --chown=airflow:0 include/config /opt/mlsteps/config
COPY --chown=airflow:0 include/feature_repo /opt/mlsteps/feature_repo
# Declared late so that a new commit does not invalidate the cached pip layers above.
ARG GIT_SHA=unknown
ENV ML_PIPELINE_CONFIG=/opt/mlsteps/config/pipeline.yaml \
    ML_FEAST_STORE_YAML=/opt/mlsteps/feature_repo/feature_store.production.yaml \
    ML_GIT_SHA=${GIT_SHA} \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

FROM base AS airflow-ml
ARG EXTRA_CA_CERTS=""
# Local mode: each step is a child process of the worker, so the worker needs the whole ML stack.
# Its dependencies come first, from pyproject.toml alone, so that this long layer survives edits to
# the code. As in the CPU step image, xgboost-cpu at the pinned version replaces the CUDA build of
# xgboost (no CUDA, no NCCL), and mypy (feast's SQLAlchemy[mypy] extra) is left out.
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && python -c "import tomllib; deps = tomllib.load(open('/opt/mlsteps/src/pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('xgboost')))" > /tmp/mlsteps-deps.txt \
    && sed -n 's/^xgboost==\([^ ]*\).*/xgboost-cpu==\1/p' /opt/mlsteps/constraints.txt >> /tmp/mlsteps-deps.txt \
    && pip install --no-cache-dir -c /opt/mlsteps/constraints.txt -r /tmp/mlsteps-deps.txt \
    && pip uninstall --yes mypy \
    && rm -f /tmp/build-ca.pem /tmp/mlsteps-deps.txt
COPY --chown=airflow:0 include/mlsteps /opt/mlsteps/src/mlsteps
# --no-deps installs only mlsteps itself (its build backend, setuptools, still comes from the index).
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && pip install --no-cache-dir --no-deps /opt/mlsteps/src \
    && rm -f /tmp/build-ca.pem
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
# 50000 is the official image's airflow user (numeric, so runAsNonRoot can verify it).
USER 50000

FROM base AS airflow
ARG EXTRA_CA_CERTS=""
COPY --chown=airflow:0 include/mlsteps /opt/mlsteps/src/mlsteps
# --no-deps installs only mlsteps itself (its build backend, setuptools, still comes from the index).
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && pip install --no-cache-dir --no-deps /opt/mlsteps/src \
    && rm -f /tmp/build-ca.pem
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
USER 50000
