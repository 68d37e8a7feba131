#!/usr/bin/env bash
# The official image's /entrypoint, reduced to what docker-compose.yaml uses: optional database
# migration (_AIRFLOW_DB_MIGRATE=true), then `airflow <command>`; bash and python run as given.
set -euo pipefail
if [[ "${_AIRFLOW_DB_MIGRATE:-false}" == "true" ]]; then
    airflow db migrate
fi
if [[ $# -eq 0 ]]; then
    exec airflow --help
fi
case "$1" in
    bash | python | python3 | pip) exec "$@" ;;
    airflow) shift ;;
esac
exec airflow "$@"
