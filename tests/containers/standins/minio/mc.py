#!/opt/venv/bin/python
"""Stand-in for MinIO's `mc`: `alias set`, `mb [--ignore-existing]` and `ready`, through boto3."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

CONFIG = Path(os.environ.get("MC_CONFIG_DIR", Path.home() / ".mc")) / "config.json"
#: mc's built-in alias: the server in the same container, as the minio image's healthcheck uses it.
DEFAULT_ALIASES = {"local": {"url": "http://localhost:9000", "accessKey": "", "secretKey": ""}}


def aliases() -> dict[str, dict[str, str]]:
    saved = json.loads(CONFIG.read_text())["aliases"] if CONFIG.exists() else {}
    return {**DEFAULT_ALIASES, **saved}


def alias_set(name: str, url: str, access_key: str, secret_key: str) -> int:
    saved = json.loads(CONFIG.read_text())["aliases"] if CONFIG.exists() else {}
    saved[name] = {"url": url, "accessKey": access_key, "secretKey": secret_key}
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(json.dumps({"version": "10", "aliases": saved}))
    print(f"Added `{name}` successfully.")
    return 0


def make_buckets(targets: list[str], ignore_existing: bool) -> int:
    import boto3

    for target in targets:
        name, _, bucket = target.partition("/")
        alias = aliases()[name]
        client = boto3.client(
            "s3",
            endpoint_url=alias["url"],
            aws_access_key_id=alias["accessKey"] or "minioadmin",
            aws_secret_access_key=alias["secretKey"] or "minioadmin",
            region_name="us-east-1",
        )
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket in existing:
            if not ignore_existing:
                print(f"mc: bucket {target} already exists", file=sys.stderr)
                return 1
            continue
        client.create_bucket(Bucket=bucket)
        print(f"Bucket created successfully `{target}`.")
    return 0


def ready(name: str) -> int:
    try:
        urllib.request.urlopen(aliases()[name]["url"] + "/", timeout=5)
    except urllib.error.HTTPError:
        pass  # the server answered: it is up
    except (OSError, KeyError) as err:
        print(f"mc: {name} is not ready: {err}", file=sys.stderr)
        return 1
    print(f"The cluster '{name}' is ready")
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["alias", "set", name, url, access_key, secret_key]:
            return alias_set(name, url, access_key, secret_key)
        case ["mb", *rest]:
            targets = [a for a in rest if not a.startswith("-")]
            return make_buckets(targets, ignore_existing="--ignore-existing" in rest or "-p" in rest)
        case ["ready", name]:
            return ready(name)
    print(f"mc stand-in: unsupported command: {' '.join(argv)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
