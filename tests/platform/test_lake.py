"""The lake on a local directory and on the S3 API: JSON, manifest-committed partitions, streaming reads."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsteps.contract.layout import partition
from mlsteps.errors import StepError
from mlsteps.platform.lake import MARKER, STAGING, Lake

PREFIX = partition("raw/events", "2026-11-01")


@pytest.fixture(params=["local_lake", "s3_lake"])
def lake(request: pytest.FixtureRequest) -> Lake:
    """The same tests on a local-directory lake and on a bucket of the loopback S3 API."""
    return Lake(request.getfixturevalue(request.param))


def table(rows: int, start: int = 0) -> pa.Table:
    return pa.table(
        {"id": pa.array(range(start, start + rows), pa.int64()), "value": [i * 0.5 for i in range(rows)]}
    )


def test_partition_path() -> None:
    assert partition("raw/events/", "2026-11-01") == "raw/events/ds=2026-11-01"


def test_lake_kind_follows_uri(lake: Lake) -> None:
    assert lake.is_local == (not lake.uri.startswith("s3://"))
    assert lake.url("a/b.json") == f"{lake.uri}/a/b.json"


def test_json_round_trip(lake: Lake) -> None:
    document = {"model": "card_fraud_xgb", "version": 3, "metrics": {"roc_auc": 0.91}, "tags": ["a", "b"]}
    lake.write_json("reports/x/result.json", document)

    assert lake.exists("reports/x/result.json")
    assert lake.read_json("reports/x/result.json") == document
    assert lake.list_dir("reports/x") == ["result.json"]

    lake.write_json("reports/x/result.json", {"version": 4})  # overwrite in place
    assert lake.read_json("reports/x/result.json") == {"version": 4}
    assert lake.list_dir("reports/x") == ["result.json"], "no temporary files are left behind"
    assert not lake.exists("reports/x/other.json")
    assert lake.list_dir("reports/nothing-here") == []


def test_commit_makes_partition_visible_with_exact_manifest(lake: Lake) -> None:
    staging = lake.stage(PREFIX)
    first = staging.write_parquet("00000.parquet", table(120))
    second = staging.write_parquet("00001.parquet", table(30, start=120))

    # Staged but not committed: invisible to readers.
    assert lake.manifest(PREFIX) is None
    assert lake.partition_files(PREFIX) == []

    manifest = lake.commit(staging, {"producer": "test", "ds": "2026-11-01"})

    assert lake.manifest(PREFIX) == manifest
    assert manifest["producer"] == "test"
    assert manifest["attempt"] == staging.attempt
    assert manifest["rows"] == 150
    files = manifest["files"]
    assert [entry["rows"] for entry in files] == [120, 30]
    assert [entry["sha256"] for entry in files] == [first.sha256, second.sha256]
    assert lake.partition_files(PREFIX) == [f"{PREFIX}/{entry['path']}" for entry in files]
    assert sorted(lake.list_dir(PREFIX)) == sorted([MARKER, *(entry["path"] for entry in files)])
    for entry, relative in zip(files, lake.partition_files(PREFIX), strict=True):
        data = lake.read_bytes(relative)
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert pq.read_table(io.BytesIO(data)).num_rows == entry["rows"]
    assert lake.read_table(lake.partition_files(PREFIX)).column("id").to_pylist() == list(range(150))
    assert lake.partitions("raw/events") == ["2026-11-01"]
    assert lake.list_dir(f"{STAGING}/{PREFIX}") == [], "the staging area is cleaned up"


def test_uncommitted_staging_stays_invisible(lake: Lake) -> None:
    abandoned = lake.stage(PREFIX)
    abandoned.write_parquet("00000.parquet", table(10))
    # A writer killed here leaves only staged files: the partition has no manifest and no data files.
    assert lake.manifest(PREFIX) is None
    assert lake.partition_files(PREFIX) == []
    assert lake.list_dir(PREFIX) == []

    # After a committed version, a later abandoned attempt still does not show.
    committed = lake.stage(PREFIX)
    committed.write_parquet("00000.parquet", table(5))
    lake.commit(committed, {})
    another = lake.stage(PREFIX)
    another.write_parquet("00000.parquet", table(99))
    assert lake.read_table(lake.partition_files(PREFIX)).num_rows == 5
    manifest = lake.manifest(PREFIX)
    assert manifest is not None
    assert manifest["rows"] == 5


def test_recommit_replaces_the_partition(lake: Lake) -> None:
    old = lake.stage(PREFIX)
    old.write_parquet("00000.parquet", table(40))
    old.write_parquet("00001.parquet", table(40, start=40))
    old_manifest = lake.commit(old, {"run": 1})

    new = lake.stage(PREFIX)
    new.write_parquet("00000.parquet", table(25, start=1000))
    new_manifest = lake.commit(new, {"run": 2})

    assert new_manifest["attempt"] != old_manifest["attempt"]
    assert lake.manifest(PREFIX) == new_manifest
    assert lake.list_dir(PREFIX) == sorted([MARKER, new_manifest["files"][0]["path"]]), "no old parts remain"
    rows = lake.read_table(lake.partition_files(PREFIX)).column("id").to_pylist()
    assert rows == list(range(1000, 1025)), "exactly the new rows, no duplicates"

    # Committing the same content again (an idempotent rerun) still leaves one copy.
    again = lake.stage(PREFIX)
    again.write_parquet("00000.parquet", table(25, start=1000))
    lake.commit(again, {"run": 3})
    assert len(lake.partition_files(PREFIX)) == 1
    assert lake.read_table(lake.partition_files(PREFIX)).num_rows == 25


def test_iter_batches_streams_in_bounded_batches(lake: Lake) -> None:
    staging = lake.stage(PREFIX)
    staging.write_parquet("00000.parquet", table(2_500))
    staging.write_parquet("00001.parquet", table(1_000, start=2_500))
    lake.commit(staging, {})

    batches = list(lake.iter_batches(lake.partition_files(PREFIX), columns=["id"], batch_rows=400))

    assert all(batch.num_rows <= 400 for batch in batches)
    assert len(batches) >= 3_500 // 400
    assert all(batch.schema.names == ["id"] for batch in batches)
    ids = [value for batch in batches for value in batch.column("id").to_pylist()]
    assert ids == list(range(3_500))


def test_landing_partition_without_manifest_lists_only_parquet_files(lake: Lake) -> None:
    landing = partition("raw/landing", "2026-11-02")
    buffer = io.BytesIO()
    pq.write_table(table(7), buffer)
    for name in ("part-0.parquet", "part-1.parquet", "_temporary.parquet", ".hidden.parquet"):
        lake.write_bytes(f"{landing}/{name}", buffer.getvalue())
    lake.write_bytes(f"{landing}/README.txt", b"not data")
    lake.write_bytes(f"{landing}/_SUCCESS", b"")

    assert lake.manifest(landing) is None
    assert lake.partition_files(landing) == [f"{landing}/part-0.parquet", f"{landing}/part-1.parquet"]
    assert lake.read_table(lake.partition_files(landing)).num_rows == 14


def test_delete_removes_files_and_trees(lake: Lake) -> None:
    lake.write_json("tmp/a/one.json", 1)
    lake.write_json("tmp/a/b/two.json", 2)
    lake.write_json("tmp/keep.json", 3)

    lake.delete("tmp/a")
    lake.delete("tmp/never-existed")

    assert not lake.exists("tmp/a/one.json")
    assert not lake.exists("tmp/a/b/two.json")
    assert lake.read_json("tmp/keep.json") == 3


def test_default_lake_comes_from_env(local_lake: str) -> None:
    assert Lake().uri == local_lake.rstrip("/")


def test_file_uri_is_a_local_lake(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}/lake")
    lake.write_json("x.json", {"ok": True})
    assert (tmp_path / "lake" / "x.json").is_file()


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("gs://bucket/prefix", ["unsupported scheme", "gs"]),
        ("hdfs://namenode/lake", ["unsupported scheme", "hdfs"]),
        ("s3:///prefix-without-bucket", ["no bucket", "s3://bucket/prefix"]),
    ],
)
def test_bad_lake_uri_is_a_step_error(uri: str, words: list[str]) -> None:
    with pytest.raises(StepError) as caught:
        Lake(uri)
    for word in words:
        assert word in str(caught.value)


def test_local_lake_root_that_is_a_file_is_a_step_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "lake"
    not_a_directory.write_text("oops")
    for uri in (str(not_a_directory), str(not_a_directory / "below")):
        with pytest.raises(StepError, match="not a usable directory") as caught:
            Lake(uri)
        assert str(not_a_directory) in str(caught.value)
