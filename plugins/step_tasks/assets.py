"""Assets shared by DAGs: one name per dataset the pipeline publishes."""

from __future__ import annotations

from airflow.sdk import Asset


def predictions_asset(pipeline: str, model: str) -> Asset:
    """The predictions of ``model``; one event per committed ``ds`` partition (``extra['ds']``)."""
    return Asset(name=f"{pipeline}_predictions", uri=f"mlsteps://{pipeline}/predictions/{model}")
