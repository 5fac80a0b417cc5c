"""Training-set splits: whole days, fractions within days, explicit boundaries, and
refusals that name the flag that helps."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from training.dataset import Split, SplitRequest

START = datetime(2026, 3, 2, tzinfo=UTC)


def times(hours: np.ndarray) -> pd.Series:
    return pd.Series(pd.Timestamp(START) + pd.to_timedelta(hours, unit="h")).astype(
        "datetime64[us, UTC]"
    )


def test_day_split_keeps_the_last_partial_day_as_test() -> None:
    end = START + timedelta(days=13, hours=23)  # a 14-day log, the last hour still open
    split = SplitRequest().resolve(times(np.arange(0, 335)), START, end)
    assert split.how == "days"
    assert split.test == START + timedelta(days=13)
    assert split.calibration == START + timedelta(days=12)
    assigned = split.assign(times(np.array([0.0, 12 * 24 + 1, 13 * 24 + 22.5])))
    assert assigned.tolist() == ["train", "calibration", "test"]


def test_two_day_log_is_split_by_fractions_within_days() -> None:
    hours = np.sort(np.random.default_rng(0).uniform(0, 47, 1_000))
    end = START + timedelta(hours=47)
    split = SplitRequest().resolve(times(hours), START, end)
    assert split.how == "fractions"
    shares = pd.Series(split.assign(times(hours))).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.01)
    assert shares["calibration"] == pytest.approx(0.15, abs=0.01)
    assert shares["test"] == pytest.approx(0.15, abs=0.01)


def test_rows_of_one_instant_stay_in_one_split() -> None:
    hours = np.repeat(np.arange(10.0), 10)  # ten rows per instant
    split = Split.by_fractions(times(hours), START, START + timedelta(hours=10), (0.55, 0.25, 0.2))
    assigned = pd.DataFrame({"hour": hours, "split": split.assign(times(hours))})
    assert (assigned.groupby("hour")["split"].nunique() == 1).all()


def test_explicit_boundaries_and_fractions() -> None:
    rows = times(np.arange(0, 48))
    end = START + timedelta(hours=48)
    explicit = SplitRequest(START + timedelta(hours=30), START + timedelta(hours=40))
    split = explicit.resolve(rows, START, end)
    assert (split.how, split.test) == ("explicit", START + timedelta(hours=40))
    halves = SplitRequest(fractions=(0.5, 0.25, 0.25)).resolve(rows, START, end)
    assert halves.calibration == START + timedelta(hours=24)
    assert halves.test == START + timedelta(hours=36)


@pytest.mark.parametrize(
    ("request_split", "flag"),
    [
        (lambda: SplitRequest(START + timedelta(hours=40), START + timedelta(hours=30)),
         "--calibration-from"),
        (lambda: SplitRequest(START + timedelta(hours=40)), "--test-from"),
        (lambda: SplitRequest(fractions=(0.5, 0.5, 0.5)), "--split-fractions"),
        (lambda: SplitRequest(calibration_days=1, test_days=1), "--split-fractions"),
    ],
)  # fmt: skip
def test_refusals_name_the_flag(request_split, flag) -> None:
    rows = times(np.arange(0, 48))
    with pytest.raises(ValueError, match=flag):
        request_split().resolve(rows, START, START + timedelta(hours=48))
