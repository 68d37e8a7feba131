"""Fixtures shared by the step tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlsteps.platform.lake import Lake
from tests.steps.lineage_fixtures import PipelineRun


@pytest.fixture
def lake_copy(pipeline: PipelineRun, tmp_path: Path) -> Lake:
    """A private copy of the module's pipeline lake, so a test may change or delete records."""
    shutil.copytree(pipeline.lake, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))
