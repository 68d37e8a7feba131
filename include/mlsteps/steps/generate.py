"""Generate synthetic raw card-transaction events, reproducible by seed, into the lake.

The fraud label follows a known rule that depends on the customer's recent history (their
trailing 30-day mean amount and their count of events in the last 24 hours), so per-customer
aggregates carry real signal. Each day is drawn from its own seed, so a day's events do not
depend on which range was asked for.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING

from mlsteps.contract.layout import partition
from mlsteps.contract.results import GenerateDataResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, parse_day

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CATEGORIES = (
    "grocery", "restaurant", "fuel", "travel", "electronics", "online_retail", "entertainment", "health",
)  # fmt: skip
COLUMNS = (
    "transaction_id", "customer_id", "event_time", "amount", "merchant_category",
    "card_present", "is_international", "distance_from_home_km", "is_fraud",
)  # fmt: skip
DRIFTABLE = ("amount", "distance_from_home_km", "is_international", "card_present", "merchant_category")
HISTORY_DAYS = 30
#: The known generative rule: log-odds of fraud.
RULE = (
    "logit = -8.0 + 2.8*max(0, ln(amount / trailing_30d_mean_amount)) + 1.4*[events_last_24h >= 4]"
    " + 2.2*is_international + 1.5*(1 - card_present) + 1.4*[distance_km > 150] + 1.1*[hour < 5]"
    " + N(0, 0.4)"
)
#: The rule from ``--concept-shift-from`` on (concept drift): the inputs are drawn exactly as before,
#: but fraud moves to online and electronics purchases and the old signals weaken.
SHIFTED_RULE = (
    "logit = -5.2 + 0.8*max(0, ln(amount / trailing_30d_mean_amount)) + 0.5*[events_last_24h >= 4]"
    " + 0.4*is_international + 2.6*[merchant_category in (online_retail, electronics)]"
    " - 1.2*(1 - card_present) + 1.1*[hour < 5] + N(0, 0.4)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=parse_day, required=True, help="First day to write (ISO date).")
    parser.add_argument("--days", type=int, default=30, help="Number of days to write (default 30).")
    parser.add_argument("--rows-per-day", type=int, default=5_000, help="Ordinary events per day.")
    parser.add_argument("--customers", type=int, default=2_000, help="Size of the customer population.")
    parser.add_argument("--seed", type=int, default=7, help="Seed; the same seed gives the same events.")
    parser.add_argument("--drift-from", type=parse_day, help="From this day on, shift the drift columns.")
    parser.add_argument(
        "--drift-columns",
        default="amount,distance_from_home_km,merchant_category",
        help=f"Comma-separated columns to shift with --drift-from; any of {', '.join(DRIFTABLE)}.",
    )
    parser.add_argument(
        "--concept-shift-from",
        type=parse_day,
        help="From this day on, label by SHIFTED_RULE (concept drift); the inputs are unchanged.",
    )


def run(args: argparse.Namespace) -> GenerateDataResult:
    context = StepContext.from_args(args)
    config = context.config
    _check_arguments(args)
    drift_columns = tuple(c.strip() for c in args.drift_columns.split(",") if c.strip())
    unknown = sorted(set(drift_columns) - set(DRIFTABLE))
    if unknown:
        raise StepError(f"--drift-columns has unknown column(s) {unknown}; choose from {list(DRIFTABLE)}")
    missing = sorted(set(COLUMNS) - set(config.dataset.columns))
    if missing:
        raise StepError(
            f"generate-data writes the card-transaction schema, but dataset '{config.dataset.name}' "
            f"lacks columns {missing}; point --config at a card-transaction config"
        )
    days = [args.start + dt.timedelta(days=i) for i in range(args.days)]
    events = generate_events(
        days,
        args.rows_per_day,
        args.customers,
        args.seed,
        args.drift_from,
        drift_columns,
        concept_shift_from=args.concept_shift_from,
    )
    written = []
    for day, frame in events.groupby(events["event_time"].dt.date, sort=True):
        written.append(_write_day(context, day, frame, args))
    total = sum(entry["rows"] for entry in written)
    uri = context.lake.url(config.dataset.source)
    return {
        "summary": f"{total} raw events over {len(written)} days written to {uri}",
        "rows": total,
        "days": [entry["ds"] for entry in written],
        "uri": uri,
        "fraud_rate": round(float(events["is_fraud"].mean()), 5),
        "drift_from": args.drift_from.isoformat() if args.drift_from else None,
        "concept_shift_from": args.concept_shift_from.isoformat() if args.concept_shift_from else None,
    }


def _check_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.days <= 3_650:
        raise StepError(f"--days must be between 1 and 3650, got {args.days}")
    if not 10 <= args.rows_per_day <= 5_000_000:
        raise StepError(f"--rows-per-day must be between 10 and 5000000, got {args.rows_per_day}")
    if not 10 <= args.customers <= 10_000_000:
        raise StepError(f"--customers must be between 10 and 10000000, got {args.customers}")


def _write_day(context: StepContext, day: dt.date, frame: pd.DataFrame, args: argparse.Namespace) -> dict:
    import pyarrow as pa

    prefix = partition(context.config.dataset.source, day)
    staging = context.lake.stage(prefix)
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    staging.write_parquet("00000.parquet", table, unique_columns=[context.config.dataset.row_id])
    manifest = context.lake.commit(
        staging, {"producer": "generate-data", "seed": args.seed, "ds": day.isoformat(), **context.lineage()}
    )
    return {"ds": day.isoformat(), "rows": manifest["rows"]}


def generate_events(
    days: list[dt.date],
    rows_per_day: int,
    customers: int,
    seed: int,
    drift_from: dt.date | None = None,
    drift_columns: tuple[str, ...] = (),
    concept_shift_from: dt.date | None = None,
) -> pd.DataFrame:
    """Events for ``days``, labelled by :data:`RULE` using each customer's 30 days of history.

    Args:
        days: Consecutive days to return.
        rows_per_day: Ordinary events per day; compromised customers add short bursts on top.
        customers: Population size.
        seed: Base seed. Customer profiles and every day's draws derive from it.
        drift_from: First day whose ``drift_columns`` are shifted, or None.
        drift_columns: Columns to shift on and after ``drift_from``.
        concept_shift_from: First day labelled by :data:`SHIFTED_RULE` instead of :data:`RULE`, or None.

    Returns:
        Raw events sorted by event time, with the columns in :data:`COLUMNS`.
    """
    import numpy as np
    import pandas as pd

    profiles = _customer_profiles(customers, seed)
    history_start = days[0] - dt.timedelta(days=HISTORY_DAYS)
    all_days = [history_start + dt.timedelta(days=i) for i in range((days[-1] - history_start).days + 1)]
    frames = []
    for day in all_days:
        frame = _draw_day(day, rows_per_day, profiles, seed)
        if drift_from is not None and day >= drift_from:
            frame = _apply_drift(frame, drift_columns, np.random.default_rng([seed, day.toordinal(), 99]))
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True).sort_values("event_time", kind="stable")
    events = _label(events, profiles, concept_shift_from)
    events = events[events["event_time"].dt.date >= days[0]]
    return events.loc[:, list(COLUMNS)].reset_index(drop=True)


def _customer_profiles(customers: int, seed: int) -> dict[str, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng([seed, 0])
    return {
        "amount_mu": rng.normal(3.4, 0.6, customers),
        "category_weights": rng.dirichlet(np.full(len(CATEGORIES), 0.6), customers),
        "card_present_rate": rng.beta(7, 3, customers),
        "international_rate": rng.beta(1, 40, customers),
        "distance_scale": rng.exponential(8.0, customers) + 1.0,
        "activity": rng.lognormal(0.0, 0.8, customers),
    }


def _draw_day(day: dt.date, rows: int, profiles: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    """One day's ordinary events plus short bursts from compromised customers."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, day.toordinal()])
    customers = len(profiles["amount_mu"])
    activity = profiles["activity"] / profiles["activity"].sum()
    who = rng.choice(customers, size=rows, p=activity)
    compromised = rng.choice(customers, size=max(1, customers // 400), replace=False)
    burst_sizes = rng.integers(3, 9, size=len(compromised))
    burst_who = np.repeat(compromised, burst_sizes)
    in_burst = np.concatenate([np.zeros(rows, bool), np.ones(len(burst_who), bool)])
    who = np.concatenate([who, burst_who])
    n = len(who)

    hours = np.where(in_burst, rng.integers(0, 6, n), rng.choice(24, size=n, p=_HOUR_WEIGHTS))
    seconds = hours * 3600 + rng.integers(0, 3600, n)
    midnight = pd.Timestamp(day, tz="UTC")
    event_time = (
        midnight + pd.to_timedelta(seconds, unit="s") + pd.to_timedelta(rng.integers(0, 10**6, n), "us")
    )
    amount = np.exp(rng.normal(profiles["amount_mu"][who] + np.where(in_burst, 1.6, 0.0), 0.7))
    cumulative = profiles["category_weights"][who].cumsum(axis=1)
    category = (cumulative < rng.random(n)[:, None]).sum(axis=1).clip(0, len(CATEGORIES) - 1)
    card_present = rng.random(n) < np.where(in_burst, 0.1, profiles["card_present_rate"][who])
    international = rng.random(n) < np.where(in_burst, 0.5, profiles["international_rate"][who])
    distance = rng.exponential(profiles["distance_scale"][who]) * np.where(in_burst, 40.0, 1.0)
    distance = np.where(rng.random(n) < 0.01, np.nan, distance)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{day:%Y%m%d}-{i:07d}" for i in range(n)],
            "customer_id": [f"c{c:06d}" for c in who],
            "customer_index": who,
            "event_time": event_time,
            "amount": np.round(amount, 2).clip(0.01, 99_999),
            "merchant_category": np.asarray(CATEGORIES)[category],
            "card_present": card_present,
            "is_international": international,
            "distance_from_home_km": np.round(distance, 3).clip(0, 19_999),
            "label_noise": rng.normal(0.0, 0.4, n),
            "label_draw": rng.random(n),
        }
    )


_HOUR_WEIGHTS = [
    0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.5, 3.0, 4.5, 5.0, 5.5, 6.0,
    7.0, 6.5, 6.0, 6.0, 6.5, 7.0, 7.5, 7.0, 5.5, 4.0, 2.5, 1.2,
]  # fmt: skip
_HOUR_WEIGHTS = [w / sum(_HOUR_WEIGHTS) for w in _HOUR_WEIGHTS]


def _apply_drift(frame: pd.DataFrame, columns: tuple[str, ...], rng: np.random.Generator) -> pd.DataFrame:
    """Shift the chosen columns' distributions (covariate shift); the labelling rule is unchanged."""
    import numpy as np

    frame = frame.copy()
    n = len(frame)
    if "amount" in columns:
        frame["amount"] = (frame["amount"] * 2.2).clip(0.01, 99_999).round(2)
    if "distance_from_home_km" in columns:
        frame["distance_from_home_km"] = (frame["distance_from_home_km"] * 4.0 + 5.0).clip(0, 19_999)
    if "is_international" in columns:
        frame["is_international"] = frame["is_international"] | (rng.random(n) < 0.25)
    if "card_present" in columns:
        frame["card_present"] = frame["card_present"] & (rng.random(n) < 0.5)
    if "merchant_category" in columns:
        moved = rng.random(n) < 0.45
        frame.loc[moved, "merchant_category"] = np.where(
            rng.random(moved.sum()) < 0.6, "online_retail", "electronics"
        )
    return frame


def _label(
    events: pd.DataFrame, profiles: dict[str, np.ndarray], concept_shift_from: dt.date | None = None
) -> pd.DataFrame:
    """Apply :data:`RULE` (:data:`SHIFTED_RULE` from the shift on) with each customer's past history."""
    import numpy as np

    ordered = events.sort_values(["customer_index", "event_time"], kind="stable")
    grouped = ordered.set_index("event_time").groupby("customer_index", sort=False)["amount"]
    past_mean = grouped.rolling("30D", closed="left").mean().to_numpy()
    past_count_24h = grouped.rolling("1D", closed="left").count().to_numpy()
    fallback = np.exp(profiles["amount_mu"][ordered["customer_index"].to_numpy()] + 0.245)
    past_mean = np.where(np.isnan(past_mean), fallback, past_mean)
    signals = {
        "jump": np.maximum(0.0, np.log(ordered["amount"].to_numpy() / past_mean)),
        "burst": np.nan_to_num(past_count_24h) >= 4,
        "international": ordered["is_international"].to_numpy(),
        "card_absent": ~ordered["card_present"].to_numpy(),
        "far": ordered["distance_from_home_km"].fillna(0.0).to_numpy() > 150,
        "night": ordered["event_time"].dt.hour.to_numpy() < 5,
        "online": ordered["merchant_category"].isin(["online_retail", "electronics"]).to_numpy(),
    }
    logit = _rule_logit(signals) + ordered["label_noise"].to_numpy()
    if concept_shift_from is not None:
        shifted = (ordered["event_time"].dt.date >= concept_shift_from).to_numpy()
        logit = np.where(shifted, _shifted_logit(signals) + ordered["label_noise"].to_numpy(), logit)
    probability = 1.0 / (1.0 + np.exp(-logit))
    ordered = ordered.assign(is_fraud=ordered["label_draw"].to_numpy() < probability)
    return ordered.sort_values("event_time", kind="stable")


def _rule_logit(s: dict[str, np.ndarray]) -> np.ndarray:
    """:data:`RULE` without its noise term."""
    return (
        -8.0 + 2.8 * s["jump"] + 1.4 * s["burst"] + 2.2 * s["international"] + 1.5 * s["card_absent"]
        + 1.4 * s["far"] + 1.1 * s["night"]
    )  # fmt: skip


def _shifted_logit(s: dict[str, np.ndarray]) -> np.ndarray:
    """:data:`SHIFTED_RULE` without its noise term."""
    return (
        -5.2 + 0.8 * s["jump"] + 0.5 * s["burst"] + 0.4 * s["international"] + 2.6 * s["online"]
        - 1.2 * s["card_absent"] + 1.1 * s["night"]
    )  # fmt: skip
