"""The drift reference: which training rows it profiles, and which inputs it leaves
unjudged (calendar day, ages, windows still filling in), with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from adstack.flows import reference_rows
from artifact.feature_map import FeatureMap
from feature_repo import contract
from training import dataset
from training.labels import LabelReport
from validation import drift

START = datetime(2026, 3, 2, tzinfo=UTC)
DENSE = ["user_clicks_1d", "user_clicks_7d", "ad_days_since_first_impression"]


def _set(days: int) -> tuple[dataset.TrainingSet, FeatureMap]:
    rows = days * 24
    rng = np.random.default_rng(days)
    times = [START + timedelta(hours=h) for h in range(rows)]
    frame = pd.DataFrame(
        {
            "event_timestamp": pd.Series(times).astype("datetime64[us, UTC]"),
            "click": rng.integers(0, 2, rows),
            "conversion": np.zeros(rows, dtype=np.int64),
            "day_of_week": [(t.weekday()) for t in times],
            "hour_of_day": [t.hour for t in times],
            **{name: rng.poisson(3.0, rows).astype(float) for name in DENSE},
        }
    )
    frame["split"] = "train"
    end = START + timedelta(days=days)
    splits = dataset.Split(START, end - timedelta(days=2), end - timedelta(days=1), end, "days")
    labels = LabelReport("ctr", rows, 0, 0, rows, int(frame["click"].sum()), 0, str(end))
    training_set = dataset.TrainingSet(frame, "ctr", "ctr_v1", [], splits, labels, (), START)
    fm = FeatureMap.fit(frame, [], ["day_of_week", "hour_of_day"], DENSE, set())
    return training_set, fm


def test_a_long_log_is_profiled_on_its_last_week_with_every_window_full() -> None:
    training_set, fm = _set(20)
    rows, history = reference_rows(training_set, fm)
    last = training_set.frame["event_timestamp"].max()
    assert rows["event_timestamp"].min() == last - timedelta(days=7)
    assert history == last - timedelta(days=7) - START
    skipped = drift.not_judged(fm, history)
    assert set(skipped) == {"day_of_week", "ad_days_since_first_impression"}
    assert skipped["day_of_week"].startswith("calendar")
    assert skipped["ad_days_since_first_impression"].startswith("an age")
    reference = drift.reference_profile(rows, "ctr", fm, history=history)
    assert [c.name for c in reference.columns] == [
        "hour_of_day",
        "user_clicks_1d",
        "user_clicks_7d",
    ]
    assert drift.Reference.from_dict(reference.as_dict()).not_judged == skipped


def test_a_short_log_keeps_a_day_and_calls_longer_windows_warming_up() -> None:
    training_set, fm = _set(4)
    rows, history = reference_rows(training_set, fm)
    last = training_set.frame["event_timestamp"].max()
    # The 7d window is never full in 4 days: the reference is the last day.
    assert rows["event_timestamp"].min() == last - timedelta(days=1)
    skipped = drift.not_judged(fm, history)
    assert skipped["user_clicks_7d"] == (
        "warming up: its 7d window is longer than the 3.0 days of log the reference rows had"
    )
    assert "user_clicks_1d" not in skipped
    assert contract.WINDOW_OF["user_clicks_1d"].label == "1d"


def _days(days: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Per day: an advertiser-level rate (30 advertisers, each with a new daily value, so
    a day holds 30 distinct values) and an impression-level number, 2,000 rows."""
    rng = np.random.default_rng(seed)
    parts = []
    for d in range(days):
        advertiser = rng.integers(0, 30, 2000)
        daily = rng.beta(6, 94, 30)
        parts.append(
            pd.DataFrame(
                {
                    "event_timestamp": pd.Timestamp(START + timedelta(days=d))
                    + pd.to_timedelta(np.sort(rng.integers(0, 86_400, 2000)), unit="s"),
                    "advertiser_ctr_1d": daily[advertiser],
                    "ad_ctr_1d": rng.normal(0.05 + (shift if d == days - 1 else 0.0), 0.01, 2000),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_each_input_is_allowed_what_its_statistics_move_between_undrifted_days() -> None:
    from validation.gx import Runner

    frame = _days(8)
    fm = FeatureMap.fit(frame, [], [], ["advertiser_ctr_1d", "ad_ctr_1d"], set())
    reference_days = frame[frame["event_timestamp"] < pd.Timestamp(START + timedelta(days=7))]
    live = frame[frame["event_timestamp"] >= pd.Timestamp(START + timedelta(days=7))]
    reference = drift.reference_profile(reference_days, "ctr", fm, history=timedelta(days=7))
    assert reference.days == 7
    granular, smooth = reference.spread["advertiser_ctr_1d"], reference.spread["ad_ctr_1d"]
    # Thirty values a day move the PSI between days far more than 2,000 independent ones.
    assert granular["psi"] > drift.Thresholds().psi > smooth["psi"]
    # Without the measured limits the granular input is flagged on an undrifted day...
    bare = drift.Reference("ctr", reference.rows, reference.columns)
    assert "advertiser_ctr_1d" in drift.run(Runner(), bare, live).drifted
    # ...with them, nothing is, and a real shift of the other input still is.
    assert drift.run(Runner(), reference, live).drifted == []
    shifted = _days(8, shift=0.01)
    later = shifted[shifted["event_timestamp"] >= pd.Timestamp(START + timedelta(days=7))]
    assert drift.run(Runner(), reference, later).drifted == ["ad_ctr_1d"]


def test_limits_allow_for_a_spread_measured_on_few_days() -> None:
    factors = [drift.small_sample_factor(days) for days in (3, 4, 6, 14, 1000)]
    assert factors == sorted(factors, reverse=True)
    assert 2.0 < drift.small_sample_factor(6) < 2.2
    assert abs(factors[-1] - 1.0) < 0.01 and drift.small_sample_factor(0) == 1.0
    # The same measured spread gives a wider limit when it comes from fewer days.
    frame = _days(8)
    fm = FeatureMap.fit(frame, [], [], ["advertiser_ctr_1d", "ad_ctr_1d"], set())
    reference = drift.reference_profile(frame, "ctr", fm, history=timedelta(days=7))
    current = drift.profiles.current_stats(frame, reference.columns)
    few, many = (
        drift.statistics_table(reference.columns, current, None, reference.spread, days)
        for days in (4, 30)
    )
    granular = few["feature"] == "advertiser_ctr_1d"
    assert (few["psi_limit"][granular] > many["psi_limit"][granular]).all()
    signed, divergence = drift.null_multiples(4)
    assert (signed, divergence) == (
        drift.NULL_SIGNED * factors[1],
        drift.NULL_DIVERGENCE * factors[1],
    )


def test_the_reference_ends_where_the_training_impressions_end_not_at_the_label_cutoff() -> None:
    from dataclasses import replace

    from adstack.flows import log_end

    training_set, _ = _set(10)
    # Labels read at the end of a log that already holds the next (live) day: that day
    # is the traffic the model meets next, never part of its reference.
    live = START + timedelta(days=10)
    read_late = replace(
        training_set,
        labels=replace(training_set.labels, cutoff=str(live + timedelta(days=1))),
        impressions_end=live,
    )
    assert log_end(read_late) == live
    # Sets saved before the impressions' end was recorded fall back to the cut-off.
    assert log_end(replace(read_late, impressions_end=None)) == live + timedelta(days=1)
