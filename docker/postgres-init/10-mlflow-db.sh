#!/bin/sh
# Creates MLflow's database beside Airflow's. The postgres image runs this once, on an empty volume.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v mlflow_user="$MLFLOW_DB_USER" -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE USER :"mlflow_user" WITH PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER :"mlflow_user";
SQL
