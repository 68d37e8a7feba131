"""The step settings: every variable the steps read, validated once, the environment left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsteps.contract.settings import (
    DEFAULT_REGION,
    DEFAULT_ROW_GROUP_ROWS,
    StepSettings,
)
from mlsteps.errors import StepError


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = StepSettings.from_env({})
    assert settings.result_path is None
    assert settings.lake_uri is None
    assert settings.config_file is None
    assert settings.store_yaml is None
    assert settings.row_group_rows == DEFAULT_ROW_GROUP_ROWS == 65536
    assert settings.step_image == "local"
    assert settings.require_gpu is False
    assert settings.code_version is None
    assert settings.registry_endpoint is None
    assert settings.s3_endpoint is None
    assert settings.region == DEFAULT_REGION == "us-east-1"


def test_unset_paths_default_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = StepSettings.from_env({})
    assert settings.lake() == str(tmp_path.resolve() / ".lake")
    assert settings.state_dir() == tmp_path.resolve() / ".state"


def test_every_variable_is_read_under_its_name() -> None:
    settings = StepSettings.from_env(
        {
            "ML_STEP_RESULT": "/tmp/result.json",
            "ML_LAKE_URI": "s3://bucket/ml",
            "ML_PIPELINE_CONFIG": "/config/pipeline.yaml",
            "ML_STATE_DIR": "/state",
            "ML_FEAST_STORE_YAML": "/feast/store.yaml",
            "ML_PARQUET_ROW_GROUP_ROWS": "200",
            "ML_STEP_IMAGE": "mlsteps:1.2.3",
            "ML_REQUIRE_GPU": "1",
            "ML_GIT_SHA": "abc123",
            "FEAST_S3_ENDPOINT_URL": "http://registry:9000",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert settings.result_path == "/tmp/result.json"
    assert settings.lake() == "s3://bucket/ml"
    assert settings.config_file == "/config/pipeline.yaml"
    assert settings.state_dir() == Path("/state").resolve()
    assert settings.store_yaml == "/feast/store.yaml"
    assert settings.row_group_rows == 200
    assert settings.step_image == "mlsteps:1.2.3"
    assert settings.require_gpu is True
    assert settings.code_version == "abc123"
    assert settings.registry_endpoint == "http://registry:9000"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.region == "eu-west-1"


def test_the_service_specific_s3_endpoint_and_region_win() -> None:
    settings = StepSettings.from_env(
        {
            "AWS_ENDPOINT_URL_S3": "http://s3-only:9000",
            "AWS_ENDPOINT_URL": "http://all:9000",
            "AWS_REGION": "eu-central-1",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert (settings.s3_endpoint, settings.region) == ("http://s3-only:9000", "eu-central-1")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"ML_GIT_SHA": "unknown", "ML_CODE_VERSION": "v1"}, "v1"),
        ({"ML_GIT_SHA": " ", "ML_CODE_VERSION": ""}, None),
        ({"ML_GIT_SHA": "abc", "ML_CODE_VERSION": "v1"}, "abc"),
    ],
)
def test_the_code_version_skips_empty_and_unknown_values(
    environ: dict[str, str], expected: str | None
) -> None:
    assert StepSettings.from_env(environ).code_version == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *((value, False) for value in ["", "  ", "0", "false", "No"]),
        *((value, True) for value in ["1", "true", "YES", " yes "]),
    ],
    ids=lambda value: repr(value) if isinstance(value, str) else str(value),
)
def test_require_gpu_values(value: str, expected: bool) -> None:
    assert StepSettings.from_env({"ML_REQUIRE_GPU": value}).require_gpu is expected


def test_empty_values_count_as_unset() -> None:
    settings = StepSettings.from_env({"ML_LAKE_URI": "", "FEAST_S3_ENDPOINT_URL": "", "AWS_ENDPOINT_URL": ""})
    assert (settings.lake_uri, settings.registry_endpoint, settings.s3_endpoint) == (None, None, None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ML_PARQUET_ROW_GROUP_ROWS", "many", r"ML_PARQUET_ROW_GROUP_ROWS='many' is not an integer"),
        ("ML_PARQUET_ROW_GROUP_ROWS", "0", r"ML_PARQUET_ROW_GROUP_ROWS=0 must be a positive number of rows"),
        ("ML_REQUIRE_GPU", "maybe", r"ML_REQUIRE_GPU='maybe' must be 1, true or yes"),
    ],
    ids=["row_group_size_not_a_number", "row_group_size_below_one", "unclear_require_gpu"],
)
def test_an_invalid_value_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(StepError, match=message):
        StepSettings.from_env({name: value})


def test_loading_reads_the_process_environment_without_changing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_LAKE_URI", "s3://bucket/from-env")
    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", "")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    before = dict(os.environ)
    settings = StepSettings.from_env()
    assert settings.lake_uri == "s3://bucket/from-env"
    assert dict(os.environ) == before


def test_the_settings_keep_their_own_copy_of_the_environment() -> None:
    environ = {"ML_FEAST_REDIS": "redis:6379"}
    settings = StepSettings.from_env(environ)
    environ["ML_FEAST_REDIS"] = "changed"
    assert settings.environ["ML_FEAST_REDIS"] == "redis:6379"
    with pytest.raises(TypeError):
        settings.environ["ML_FEAST_REDIS"] = "changed"  # type: ignore[index]


def test_the_settings_are_frozen() -> None:
    settings = StepSettings.from_env({})
    with pytest.raises(AttributeError):
        settings.row_group_rows = 1  # type: ignore[misc]
