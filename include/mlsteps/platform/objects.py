"""Single lake objects created at most once: exclusive create on a local lake or on S3.

The promotion ledger, the retrain log and the champion lock build on these: a local lake
hard-links a private temporary file into place (``link`` fails when the target exists, and
readers never see a partial file); an S3 lake uses a conditional PUT (``If-None-Match: *``).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsteps.platform.lake import Lake

#: S3 error codes of a conditional PUT that lost: the object exists (or another write is in flight).
CONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict")


def create_exclusive(lake: Lake, relative: str, data: bytes) -> bool:
    """Create a lake object only if it does not exist yet, atomically with its content.

    S3 lakes use the lake's endpoint (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, read once).

    Returns:
        True when this call created the object, False when it already existed.
    """
    if lake.is_local:
        return local_create_exclusive(lake.path(relative), data)
    bucket, key = bucket_key(lake, relative)
    return s3_create_exclusive(s3_client(lake.s3_endpoint), bucket, key, data) is not None


def local_create_exclusive(target: str, data: bytes) -> bool:
    """Create the file ``target`` with ``data`` unless it exists; True when this call created it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, target)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def s3_create_exclusive(client: Any, bucket: str, key: str, data: bytes) -> str | None:
    """PUT ``data`` unless the key exists; the new object's ETag, or None when it existed."""
    try:
        response = client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except client.exceptions.ClientError as err:
        if error_code(err) in CONDITION_FAILED:
            return None
        raise
    return str(response["ETag"])


def bucket_key(lake: Lake, relative: str) -> tuple[str, str]:
    """The S3 bucket and key of a lake-relative path on an S3 lake."""
    bucket, _, key = lake.path(relative).partition("/")
    return bucket, key


def s3_client(endpoint: str | None) -> Any:
    """A boto3 S3 client for ``endpoint`` (an S3-compatible server), or AWS itself when None."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def error_code(err: Exception) -> str:
    """The ``Error.Code`` of a botocore client error ("" when there is none)."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
