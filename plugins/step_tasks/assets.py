"""Assets shared by DAGs: one name per dataset the pipeline publishes."""

from __future__ import annotations

from airflow.sdk import Asset


def predictions_asset(pipeline: str, model: str) -> Asset:
    """The predictions of ``model``; one event per committed ``ds`` partition (``extra['ds']``).

    Name and URI are both unique per (pipeline, model): Airflow deactivates an asset whose name
    or URI is already taken by another, so two models of one pipeline must not share a name.
    """
    return Asset(name=f"{pipeline}_{model}_predictions", uri=f"mlsteps://{pipeline}/predictions/{model}")


def performance_asset(pipeline: str, model: str) -> Asset:
    """The realized performance of ``model``; one event per judged day (``extra['ds']``, ``status``)."""
    return Asset(name=f"{pipeline}_{model}_performance", uri=f"mlsteps://{pipeline}/performance/{model}")
