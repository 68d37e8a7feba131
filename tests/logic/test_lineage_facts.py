"""Lineage links assembled from records already read: statuses, facts and the rendered chain."""

from __future__ import annotations

import datetime as dt

from mlsteps.logic.lineage_facts import (
    BROKEN,
    OK,
    UNREACHABLE,
    WARNING,
    Link,
    chain_document,
    code_link,
    features_link,
    params_link,
    realized_text,
    render,
    view_summary,
)
from mlsteps.platform.lineage import VERSIONS_TAG


def test_warn_does_not_hide_a_broken_link() -> None:
    link = Link("x", "record").broken("gone")
    link.warn("changed")
    assert (link.status, link.problem) == (BROKEN, "gone")


def test_warn_marks_an_intact_link() -> None:
    assert Link("x", "record").warn("changed").status == WARNING


def test_features_link_is_unreachable_without_a_snapshot() -> None:
    assert features_link({}, None, {}).status == UNREACHABLE


def test_features_link_warns_when_the_snapshot_records_no_config() -> None:
    link = features_link({"config_hash": "abc"}, {"config_hash": "abc"}, {})
    assert link.status == WARNING


def test_code_link_warns_without_a_git_sha() -> None:
    assert code_link({"git_sha": "unknown"}, None, {}).status == WARNING


def test_code_link_reads_package_versions_from_the_tag() -> None:
    link = code_link({"git_sha": "abc", VERSIONS_TAG: '{"xgboost": "3.0.0"}'}, None, {})
    assert (link.status, link.facts["packages"]) == (OK, {"xgboost": "3.0.0"})


def test_params_link_breaks_without_a_seed() -> None:
    assert params_link({}, "run1", {"max_depth": "6"}, {}).status == BROKEN


def test_params_link_is_unreachable_without_a_run() -> None:
    assert params_link({}, None, {}, {}).status == UNREACHABLE


def test_view_summary_shows_ttl_in_days() -> None:
    view = {"name": "v", "entities": ["customer"], "features": {"a": "float"}, "ttl_seconds": 2 * 86400}
    assert view_summary(view) == "v(customer; 1 features, ttl 2 d)"


def test_a_chain_with_an_unreachable_link_is_not_intact() -> None:
    links = [Link("predictions", "r"), Link("model", "-", UNREACHABLE)]
    document = chain_document("m", dt.date(2026, 3, 1), "id", "1", [], links)
    assert document["intact"] is False


def test_render_names_the_broken_links() -> None:
    links = [Link("predictions", "r").broken("missing")]
    document = chain_document("m", dt.date(2026, 3, 1), "id", "1", [], links)
    assert render(document).splitlines()[-1] == "lineage BROKEN at: predictions"


JUDGED = {
    "status": "dropped", "metric": "roc_auc", "evaluation_level": 0.9, "model_version": "3",
    "labeled_rows": 900, "scored_rows": 1000,
    "metrics": {"roc_auc": {"value": 0.71, "low": 0.68, "high": 0.74}},
}  # fmt: skip


def test_a_judged_day_reads_as_its_interval_against_the_evaluation_level() -> None:
    assert realized_text(JUDGED) == (
        "roc_auc 0.7100 [0.6800, 0.7400] vs evaluated 0.9000 for version 3: dropped, 900/1000 rows labelled"
    )


def test_a_day_waiting_for_labels_says_so() -> None:
    assert realized_text({**JUDGED, "status": "waiting"}) == "waiting for labels (900/1000 rows labelled)"


def test_a_day_never_judged_says_so() -> None:
    assert realized_text(None).startswith("not judged yet")
