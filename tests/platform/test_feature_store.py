"""The Feast repo config in use, wherever it lives, and the private copy ``reproduce`` works in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlsteps.contract.config import load_config
from mlsteps.contract.settings import StepSettings
from mlsteps.errors import StepError
from mlsteps.platform.feature_store import FEATURE_REPO, load_repo_config, private_store_yaml

PRODUCTION_YAML = FEATURE_REPO / "feature_store.production.yaml"


def _settings(store_yaml: Path, state_dir: Path) -> StepSettings:
    """Settings naming ``store_yaml`` (an image sets ``$ML_FEAST_STORE_YAML``); no Redis, no registry URI."""
    return StepSettings(store_yaml=str(store_yaml), state_dir_path=str(state_dir))


def _installed_copy(tmp_path: Path) -> Path:
    """The production config at a path unrelated to the checkout, as the step image places it."""
    target = tmp_path / "opt" / "feature_repo" / PRODUCTION_YAML.name
    target.parent.mkdir(parents=True)
    shutil.copy(PRODUCTION_YAML, target)
    return target


def test_the_private_copy_keeps_registry_and_online_store_under_its_own_state_dir(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    copy = private_store_yaml(_settings(_installed_copy(tmp_path), tmp_path / "real"), private)

    repo = load_repo_config(load_config(), settings=_settings(copy, private))

    assert (repo.registry.path, repo.online_store.type) == (str(private / "feast" / "registry.db"), "sqlite")
    assert repo.online_store.path == str(private / "feast" / "online_store.db")


def test_the_private_copy_keeps_the_offline_store_of_the_config_in_use(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    copy = private_store_yaml(_settings(_installed_copy(tmp_path), tmp_path / "real"), private)

    repo = load_repo_config(load_config(), settings=_settings(copy, private))

    assert repo.offline_store.type == "file"


def test_a_missing_config_in_use_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "feature_store.yaml"

    with pytest.raises(StepError, match=f"Feast repo config {missing} does not exist"):
        private_store_yaml(_settings(missing, tmp_path), tmp_path)


def test_the_repo_path_is_the_directory_of_the_config_in_use(tmp_path: Path) -> None:
    installed = _installed_copy(tmp_path)
    settings = StepSettings(
        store_yaml=str(installed),
        state_dir_path=str(tmp_path),
        environ={"ML_FEAST_REDIS": "localhost:6379", "ML_FEAST_REGISTRY_URI": str(tmp_path / "registry.db")},
    )

    assert load_repo_config(load_config(), settings=settings).repo_path == installed.parent
