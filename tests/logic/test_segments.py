"""Segments of the holdout: bucketing, challenger vs champion per segment, and the segment gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsteps.contract.config import (
    OTHER_CATEGORY,
    EvaluationConfig,
    PipelineConfig,
    SegmentSpec,
    load_config,
)
from mlsteps.logic.gates import Check, Judgement, Scored, segment_checks, verdict_document
from mlsteps.logic.metrics import weighted_auc
from mlsteps.logic.segments import (
    MISSING,
    REGRESSED,
    TOO_SMALL,
    SegmentResult,
    bucket_names,
    judge_segments,
    segment_values,
)

AMOUNT_BINS = SegmentSpec(column="amount", bins=(20, 100, 500))


def configured(segment_regression: bool, *segments: SegmentSpec) -> PipelineConfig:
    config = load_config()
    evaluation = EvaluationConfig(
        segments=segments or (SegmentSpec(column="merchant_category"),), min_rows=100, min_positives=10
    )
    gates = config.gates.model_copy(update={"segment_regression": segment_regression})
    return config.model_copy(update={"evaluation": evaluation, "gates": gates})


def holdout() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """400 grocery rows where the challenger is far better, 400 travel rows where it is clearly worse,
    and 30 fuel rows (too few to judge) where it is worse still: rows, labels, challenger, champion."""
    rng = np.random.default_rng(3)
    parts = []
    for category, rows, challenger_noise, champion_noise in (
        ("grocery", 400, 0.3, 2.0),
        ("travel", 400, 1.0, 0.3),
        ("fuel", 30, 3.0, 0.1),
    ):
        y = (rng.random(rows) < 0.3).astype(int)
        challenger = y + rng.normal(0, challenger_noise, rows)
        champion = y + rng.normal(0, champion_noise, rows)
        columns = {"merchant_category": category, "y": y, "new": challenger, "old": champion}
        parts.append(pd.DataFrame(columns))
    frame = pd.concat(parts, ignore_index=True)
    return frame, frame["y"].to_numpy(), frame["new"].to_numpy(), frame["old"].to_numpy()


def judged(config: PipelineConfig) -> tuple[list[SegmentResult], Judgement, np.ndarray, np.ndarray]:
    frame, y, challenger, champion = holdout()
    segments = judge_segments(frame, y, challenger, champion, "1", config)
    judgement = Judgement("1", Scored("1", champion, {}, []), None, Check("champion", True, "fine."))
    return segments, judgement, challenger, champion


def approved(config: PipelineConfig) -> bool:
    segments, judgement, challenger, _ = judged(config)
    checks = [judgement.check, *segment_checks(segments, judgement, config.gates, config.evaluation)]
    return bool(verdict_document("m", Scored("2", challenger, {}, []), judgement, checks)["approved"])


def test_the_example_challenger_is_better_overall() -> None:
    _, y, challenger, champion = holdout()
    uniform = np.ones(len(y))

    assert weighted_auc(challenger, y, uniform) > weighted_auc(champion, y, uniform) + 0.02


def test_a_challenger_better_overall_but_worse_on_one_segment_is_refused_when_the_rule_is_on() -> None:
    assert approved(configured(segment_regression=True)) is False


def test_a_challenger_better_overall_but_worse_on_one_segment_is_approved_when_the_rule_is_off() -> None:
    assert approved(configured(segment_regression=False)) is True


def test_the_refusal_names_the_segment_that_regressed() -> None:
    config = configured(segment_regression=True)
    segments, judgement, _, _ = judged(config)

    (check,) = segment_checks(segments, judgement, config.gates, config.evaluation)

    assert "merchant_category=travel" in check.sentence
    assert "grocery" not in check.sentence


def test_a_regressing_segment_is_reported_even_when_the_rule_is_off() -> None:
    segments, _, _, _ = judged(configured(segment_regression=False))

    verdicts = {segment.value: segment.verdict for segment in segments}

    assert verdicts["travel"] == REGRESSED


def test_a_too_small_segment_is_listed_as_too_small_to_judge() -> None:
    segments, _, _, _ = judged(configured(segment_regression=True))

    fuel = next(segment for segment in segments if segment.value == "fuel")

    assert (fuel.rows, fuel.verdict, fuel.comparison) == (30, TOO_SMALL, None)


def test_a_too_small_segment_never_refuses() -> None:
    config = configured(segment_regression=True)
    segments, judgement, _, _ = judged(config)
    small_only = [segment for segment in segments if segment.verdict == TOO_SMALL]

    (check,) = segment_checks(small_only, judgement, config.gates, config.evaluation)

    assert check.passed is True


def test_without_a_champion_the_segment_check_passes_and_says_so() -> None:
    config = configured(segment_regression=True)
    frame, y, challenger, _ = holdout()
    segments = judge_segments(frame, y, challenger, None, None, config)
    nobody = Judgement(None, None, None, Check("champion", True, "no champion."))

    (check,) = segment_checks(segments, nobody, config.gates, config.evaluation)

    assert (check.passed, "no champion" in check.sentence) == (True, True)


def test_bins_name_their_buckets_with_open_ends() -> None:
    assert bucket_names((20, 100, 500)) == ["< 20", "[20, 100)", "[100, 500)", ">= 500"]


@pytest.mark.parametrize(
    ("amount", "bucket"),
    [(-1.0, "< 20"), (19.99, "< 20"), (20.0, "[20, 100)"), (499.0, "[100, 500)"), (500.0, ">= 500")],
)
def test_bins_include_the_lower_edge_and_exclude_the_upper(amount: float, bucket: str) -> None:
    frame = pd.DataFrame({"amount": [amount]})

    assert segment_values(frame, AMOUNT_BINS, configured(False, AMOUNT_BINS)).tolist() == [bucket]


def test_a_missing_value_is_its_own_segment() -> None:
    frame = pd.DataFrame({"amount": [np.nan]})

    assert segment_values(frame, AMOUNT_BINS, configured(False, AMOUNT_BINS)).tolist() == [MISSING]


def test_an_unseen_category_is_the_other_segment() -> None:
    segment = SegmentSpec(column="merchant_category")
    frame = pd.DataFrame({"merchant_category": ["grocery", "space_travel"]})

    assert segment_values(frame, segment, configured(False, segment)).tolist() == ["grocery", OTHER_CATEGORY]


def test_segments_are_ordered_as_the_config_lists_the_categories() -> None:
    segments, _, _, _ = judged(configured(segment_regression=False))

    assert [segment.value for segment in segments] == ["grocery", "fuel", "travel"]
