"""The lake: one root (local directory or ``s3://bucket/prefix``) with atomic, manifest-committed writes.

A partition is visible only once its ``_SUCCESS.json`` manifest exists, and readers read exactly
the files that manifest lists. Writers stage files under ``_staging/`` and commit last, so a
killed writer leaves nothing visible and a rerun replaces the partition in one step.

On S3 the lake writes and deletes objects only, never pyarrow's empty "directory" marker objects:
its ``create_dir`` PUTs one for every level up to the lake root, and its deletes PUT one for the
parent of what they removed, so each write and delete would rewrite keys outside its own prefix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlsteps.contract.settings import StepSettings
from mlsteps.errors import StepError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

MARKER = "_SUCCESS.json"
STAGING = "_staging"
#: The name :meth:`Lake.commit` gives a part: such a file is visible only through a manifest listing it.
COMMITTED_PART = re.compile(r"^part-\d{8}T\d{6}-[0-9a-f]{8}-")


@dataclass(frozen=True)
class FileEntry:
    """One committed file, as recorded in a manifest."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class Staging:
    """Files written for one partition but not yet committed."""

    lake: Lake
    prefix: str
    attempt: str
    files: list[FileEntry] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"{STAGING}/{self.prefix}/{self.attempt}"

    def write_parquet(self, name: str, table: pa.Table, unique_columns: Collection[str] = ()) -> FileEntry:
        """Serialize ``table`` to Parquet in memory, hash it and upload it as one object.

        Memory stays bounded by one part, and the checksum costs no second read.
        ``unique_columns`` (such as a row id) are not dictionary-encoded: for values that never
        repeat, a dictionary only costs time and makes the file larger.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        dictionary: bool | list[str] = True
        if unique_columns:
            dictionary = [column for column in table.column_names if column not in unique_columns]
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            compression="zstd",
            row_group_size=self.lake.row_group_rows,
            use_dictionary=dictionary,
        )
        data = sink.getvalue()  # an Arrow buffer: written and hashed in place, never copied to bytes
        self.lake.write_bytes(f"{self.root}/{name}", data)
        entry = FileEntry(name, table.num_rows, data.size, hashlib.sha256(data).hexdigest())
        self.files.append(entry)
        return entry


class Lake:
    """The lake root and the few operations every step needs."""

    def __init__(self, uri: str | None = None, settings: StepSettings | None = None) -> None:
        """``uri`` defaults to the settings' lake; ``settings`` are read from the environment by default."""
        settings = settings or StepSettings.from_env()
        self.uri = (uri or settings.lake()).rstrip("/")
        #: Rows per Parquet row group (``ML_PARQUET_ROW_GROUP_ROWS``): the unit of sharding.
        self.row_group_rows = settings.row_group_rows
        #: The S3-compatible endpoint (MinIO, moto) from the standard AWS variables; None means AWS itself.
        self.s3_endpoint = settings.s3_endpoint
        self.fs, self._root = _filesystem(self.uri, settings)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def path(self, relative: str) -> str:
        """The filesystem path of a lake-relative path."""
        return f"{self._root}/{relative.strip('/')}" if relative else self._root

    def url(self, relative: str) -> str:
        """The full URI of a lake-relative path, for results and reports."""
        return f"{self.uri}/{relative.strip('/')}"

    def exists(self, relative: str) -> bool:
        import pyarrow.fs as pafs

        return bool(self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound)

    def write_bytes(self, relative: str, data: bytes | pa.Buffer) -> None:
        """Write one object atomically: readers see the old content or the new, never a part."""
        target = self.path(relative)
        if self.is_local:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(temporary) as stream:
                stream.write(data)
            self.fs.move(temporary, target)
        else:  # one S3 PUT is atomic
            with self.fs.open_output_stream(target) as stream:
                stream.write(data)

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return bytes(stream.read())

    def write_json(self, relative: str, document: Any) -> None:
        self.write_bytes(relative, json.dumps(document, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative))

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith("s3://")

    def list_dir(self, relative: str) -> list[str]:
        """Names directly under a lake-relative directory, sorted; empty if it does not exist."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(relative), allow_not_found=True, recursive=False)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def partitions(self, prefix: str) -> list[str]:
        """The ``ds=`` values present under a prefix, committed or not, sorted."""
        return [name.removeprefix("ds=") for name in self.list_dir(prefix) if name.startswith("ds=")]

    def delete(self, relative: str) -> None:
        """Delete a file or a directory tree; a missing path is fine.

        On S3, exactly the object ``relative`` and the objects under ``relative/`` are deleted.
        """
        import pyarrow.fs as pafs

        if not self.is_local:
            self._delete_objects(relative)
            return
        target = self.path(relative)
        info = self.fs.get_file_info(target)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(target)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(target)

    def _delete_objects(self, relative: str) -> None:
        """Delete an S3 object and every object under it as a prefix, with no marker left behind
        (pyarrow's deletes write one for the parent)."""
        from mlsteps.platform.objects import bucket_key, s3_client

        bucket, key = bucket_key(self, relative)
        client = s3_client(self.s3_endpoint)
        if key:
            client.delete_object(Bucket=bucket, Key=key)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{key}/" if key else ""
        )
        for page in pages:
            keys = [{"Key": found["Key"]} for found in page.get("Contents", [])]
            if keys:  # a listing page holds at most 1000 keys, what one DeleteObjects takes
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    # --- committed partitions -------------------------------------------------------------

    def stage(self, prefix: str) -> Staging:
        """Start writing a new version of the partition at ``prefix``."""
        attempt = _unique_token()
        return Staging(self, prefix.strip("/"), attempt)

    def commit(self, staging: Staging, metadata: dict[str, Any]) -> dict[str, Any]:
        """Make a staged partition visible, replacing any earlier version.

        New parts are published under names unique to this commit, then the manifest is written
        (the commit point), then parts of earlier commits and the staging area are removed. A
        reader that holds the old manifest until the commit keeps seeing a consistent old
        partition. Staged files are copied (hard-linked on a local lake), not moved, so a commit
        killed at any point can simply be retried: its staging area is intact until the manifest
        exists, and the parts it had published are removed by the retry as leftovers.

        Returns:
            The manifest that was written.
        """
        moved = []
        # Unique per commit, even when a rerun reuses its staging attempt: files that the current
        # manifest lists are never overwritten, only removed after the new manifest is written.
        commit_token = _unique_token()
        if self.is_local:
            self.fs.create_dir(self.path(staging.prefix), recursive=True)
        for entry in staging.files:
            final_name = f"part-{commit_token}-{entry.path}"
            self._publish(f"{staging.root}/{entry.path}", f"{staging.prefix}/{final_name}")
            moved.append(FileEntry(final_name, entry.rows, entry.bytes, entry.sha256))
        manifest = {
            **metadata,
            "attempt": staging.attempt,
            "committed_at": dt.datetime.now(dt.UTC).isoformat(),
            "rows": sum(entry.rows for entry in moved),
            "files": [entry.__dict__ for entry in moved],
        }
        self.write_json(f"{staging.prefix}/{MARKER}", manifest)
        keep = {entry.path for entry in moved} | {MARKER}
        for name in self.list_dir(staging.prefix):
            if name not in keep and not name.startswith(".tmp"):
                self.delete(f"{staging.prefix}/{name}")
        self.delete(staging.root)
        return manifest

    def _publish(self, source: str, target: str) -> None:
        """Give a staged file its final name, keeping the staged one (a hard link when local)."""
        if self.is_local:
            try:
                os.link(self.path(source), self.path(target))
                return
            except OSError:  # a filesystem without hard links: copy instead
                pass
        self.fs.copy_file(self.path(source), self.path(target))  # S3: a server-side copy

    def manifest(self, prefix: str) -> dict[str, Any] | None:
        """The committed manifest of a partition, or None when it was never committed."""
        marker = f"{prefix.strip('/')}/{MARKER}"
        return self.read_json(marker) if self.exists(marker) else None

    def require_manifest(self, prefix: str, what: str, remedy: str) -> dict[str, Any]:
        """The committed manifest of a partition, or refuse in one sentence: what is missing, where,
        and what to do about it (``remedy``)."""
        manifest = self.manifest(prefix)
        if manifest is None:
            raise StepError(f"no committed {what} at {self.url(prefix)}; {remedy}")
        return manifest

    def partition_files(self, prefix: str) -> list[str]:
        """Lake-relative data files of a partition.

        A committed partition yields exactly its manifest's files. A landing partition written by
        another system (no manifest) yields its Parquet files, skipping hidden and ``_`` names and
        the parts of a commit that never wrote its manifest (its writer was killed mid-commit).
        """
        prefix = prefix.strip("/")
        manifest = self.manifest(prefix)
        if manifest is not None:
            return [f"{prefix}/{entry['path']}" for entry in manifest["files"]]
        return [
            f"{prefix}/{name}"
            for name in self.list_dir(prefix)
            if name.endswith(".parquet")
            and not name.startswith(("_", "."))
            and not COMMITTED_PART.match(name)
        ]

    def iter_batches(
        self, files: list[str], columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches from Parquet files with bounded memory.

        Files are opened one at a time without pre-buffering, so memory depends on the batch size
        and row-group size, never on the input size (see apache/arrow#39808).
        """
        import pyarrow.parquet as pq

        for relative in files:
            with self.fs.open_input_file(self.path(relative)) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=1 << 20)
                yield from parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)

    def read_table(self, files: list[str], columns: list[str] | None = None) -> pa.Table:
        """Read whole Parquet files into one table (for inputs known to be small)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for relative in files:
            with self.fs.open_input_file(self.path(relative)) as handle:
                tables.append(pq.read_table(handle, columns=columns))
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _unique_token() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _filesystem(uri: str, settings: StepSettings) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and root path for a lake URI."""
    import pyarrow.fs as pafs

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StepError(f"lake URI {uri!r} has no bucket; use s3://bucket/prefix")
        return _s3_filesystem(settings), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if parsed.scheme not in ("", "file"):
        raise StepError(f"lake URI {uri!r} has unsupported scheme {parsed.scheme!r}; use a path or s3://")
    root = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StepError(
            f"lake root {root} is not a usable directory ({err.strerror or err}); "
            "point --lake or ML_LAKE_URI at a writable directory"
        ) from None
    return pafs.LocalFileSystem(), str(root)


def _s3_filesystem(settings: StepSettings) -> pafs.S3FileSystem:
    """An S3 filesystem honouring the standard AWS variables, ``AWS_ENDPOINT_URL`` included."""
    import pyarrow.fs as pafs

    options: dict[str, Any] = {"region": settings.region}
    if settings.s3_endpoint:
        parsed = urlparse(settings.s3_endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**options)
