"""A mutual-exclusion lock stored as one lake object, with a lease; the champion lock is one of them.

Every change of a model's ``champion`` alias and ledger happens under :func:`champion_lock`, so
two promotions can never both win.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mlsteps.contract.layout import champion_lock_path
from mlsteps.errors import StepError
from mlsteps.platform.objects import (
    CONDITION_FAILED,
    bucket_key,
    error_code,
    local_create_exclusive,
    s3_client,
    s3_create_exclusive,
)

if TYPE_CHECKING:
    from mlsteps.platform.lake import Lake

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, until when, and the token that proves which acquisition it is."""

    owner: str
    expires_at: float
    token: str
    document: dict[str, Any]

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class _LockObject(Protocol):
    """Storage for one lock: each write returns a token that identifies exactly that write."""

    def create(self, data: bytes) -> str | None: ...

    def read(self) -> Holder | None: ...

    def replace_if(self, token: str, data: bytes) -> str | None: ...

    def delete_if(self, token: str) -> bool: ...


class _LocalFile:
    """A lock file whose token is the owner id inside; takeovers serialize on ``flock`` of a guard file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.guard = f"{path}.guard"

    def create(self, data: bytes) -> str | None:
        return str(json.loads(data)["owner"]) if local_create_exclusive(self.path, data) else None

    def read(self) -> Holder | None:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
            modified = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        return _holder(raw, None, fallback_time=modified)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.guard, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def replace_if(self, token: str, data: bytes) -> str | None:
        with self._guarded():
            current = self.read()
            if current is None or current.token != token:
                return None
            os.unlink(self.path)
            return self.create(data)

    def delete_if(self, token: str) -> bool:
        with self._guarded():
            current = self.read()
            if current is None or current.token != token:
                return False
            os.unlink(self.path)
            return True


class _S3Object:
    """A lock object on S3: its token is the ETag. Conditional PUT creates; If-Match swaps and deletes."""

    def __init__(self, bucket: str, key: str, endpoint: str | None) -> None:
        self.bucket, self.key = bucket, key
        self.client = s3_client(endpoint)

    def create(self, data: bytes) -> str | None:
        return s3_create_exclusive(self.client, self.bucket, self.key, data)

    def read(self) -> Holder | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        modified = response["LastModified"].timestamp()
        return _holder(response["Body"].read(), str(response["ETag"]), fallback_time=modified)

    def replace_if(self, token: str, data: bytes) -> str | None:
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, IfMatch=token)
        except self.client.exceptions.ClientError as err:
            if error_code(err) in (*CONDITION_FAILED, "NoSuchKey"):
                return None
            raise
        return str(response["ETag"])

    def delete_if(self, token: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except self.client.exceptions.ClientError as err:
            code = error_code(err)
            if code in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
                raise
            return self._delete_if_unchanged(token)  # a store without conditional deletes
        return True

    def _delete_if_unchanged(self, token: str) -> bool:
        current = self.read()
        if current is None or current.token != token:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key)
        return True


def _holder(raw: bytes, etag: str | None, fallback_time: float) -> Holder:
    """Parse a lock document.

    The token is the S3 ETag, or for a local file the owner id inside it. An unreadable document
    (its writer died mid-write) expires one default lease after it was written.
    """
    try:
        document = json.loads(raw)
        owner, expires_at = str(document["owner"]), float(document["expires_at"])
    except (ValueError, KeyError, TypeError):
        token = etag if etag is not None else raw.decode(errors="replace")
        return Holder("unknown", fallback_time + DEFAULT_LEASE_SECONDS, token, {})
    return Holder(owner, expires_at, etag if etag is not None else owner, document)


class LakeLock:
    """A mutual-exclusion lock stored as one lake object, leased so that a killed holder cannot block forever.

    Acquire creates the object exclusively; a waiter polls until the holder releases it or its lease
    expires, and then takes it over with a compare-and-swap, so only one waiter wins. Release
    deletes the object only if it is still ours. Clocks of lock users are assumed NTP-synchronized
    (the lease is far longer than any realistic skew).

    Use it as a context manager; call :meth:`ensure_held` before each write in the critical section.
    """

    def __init__(
        self,
        lake: Lake,
        relative: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float | None = None,
        purpose: str = "",
    ) -> None:
        self.lake, self.relative, self.purpose = lake, relative, purpose
        self.lease_seconds = lease_seconds
        self.wait_seconds = lease_seconds + 30.0 if wait_seconds is None else wait_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._token: str | None = None
        self._expires_at = 0.0
        self._object: _LockObject = (
            _LocalFile(lake.path(relative))
            if lake.is_local
            else _S3Object(*bucket_key(lake, relative), lake.s3_endpoint)
        )

    def __enter__(self) -> LakeLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _document(self) -> bytes:
        self._expires_at = time.time() + self.lease_seconds
        return json.dumps(
            {
                "owner": self.owner,
                "purpose": self.purpose,
                "acquired_at": dt.datetime.now(dt.UTC).isoformat(),
                "expires_at": self._expires_at,
            }
        ).encode()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_seconds``.

        Raises:
            StepError: Another holder kept it for longer than the wait.
        """
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.05
        while True:
            if self._try_once():
                log.info("lock %s acquired by %s", self.lake.url(self.relative), self.owner)
                return
            if time.monotonic() >= deadline:
                holder = self._object.read()
                who = f"{holder.owner} until {_iso(holder.expires_at)}" if holder else "someone"
                raise StepError(
                    f"lock {self.lake.url(self.relative)} is held by {who}; another promotion or rollback "
                    f"is running, retry after it finishes"
                )
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 1.0)

    def _try_once(self) -> bool:
        data = self._document()
        token = self._object.create(data)
        if token is None:
            holder = self._object.read()
            if holder is None or not holder.expired:
                return False
            log.warning(
                "lock %s of %s expired at %s; taking it over",
                self.relative,
                holder.owner,
                _iso(holder.expires_at),
            )
            token = self._object.replace_if(holder.token, data)
        self._token = token
        return token is not None

    def ensure_held(self) -> None:
        """Check there is still lease left before a write.

        Raises:
            StepError: The lease ran out (this holder stalled), so another may have taken over.
        """
        if self._token is None or time.time() >= self._expires_at - 1.0:
            raise StepError(
                f"lock {self.lake.url(self.relative)} lease of {self.lease_seconds:g} s ran out before the "
                "change was written; nothing was changed after that point, re-run the step"
            )

    def release(self) -> None:
        """Delete the lock object if it is still ours."""
        if self._token is None:
            return
        if not self._object.delete_if(self._token):
            log.warning("lock %s was no longer ours at release (lease expired and taken over)", self.relative)
        self._token = None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def champion_lock(
    lake: Lake, model: str, purpose: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> LakeLock:
    """The lock that serializes every change of a model's ``champion`` alias and ledger."""
    return LakeLock(lake, champion_lock_path(model), lease_seconds=lease_seconds, purpose=purpose)
