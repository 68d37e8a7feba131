#!/bin/sh
# `minio server DIR [--console-address ADDR]` as moto's S3 server on :9000 (no console, no disk).
set -eu
if [ "${1:-}" != server ]; then
    echo "minio stand-in: only 'server' is supported, got: $*" >&2
    exit 2
fi
exec moto_server --host 0.0.0.0 --port 9000
