# syntax=docker/dockerfile:1
# MLflow tracking server for docker-compose: Postgres backend store, artifacts proxied to MinIO/S3.
# Versions match constraints.txt (tests/deploy/test_docker.py checks that they do).
#   docker build -f docker/mlflow.Dockerfile -t mlsteps-mlflow:local .

FROM python:3.11.14-slim-trixie
RUN pip install --no-cache-dir mlflow==3.17.2 boto3==1.43.117 psycopg2-binary==2.9.13 \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin mlflow
ENV HOME=/tmp \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
