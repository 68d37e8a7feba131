# MLflow tracking server for docker-compose: Postgres backend store, artifacts proxied to MinIO/S3.
# Versions match constraints.txt (tests/deploy/test_docker.py checks that they do).
#   docker build -f docker/mlflow.Dockerfile -t mlsteps-mlflow:local .
# Offline or behind a TLS-intercepting proxy: PYTHON_IMAGE names another base, and EXTRA_CA_CERTS
# (PEM text) is trusted by the build stage only; it never reaches the final image.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
         mlflow==3.17.2 boto3==1.43.117 psycopg2-binary==2.9.13

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
