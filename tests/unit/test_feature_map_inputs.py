"""The feature map encodes a training DataFrame and serving's column-wise inputs (numpy
arrays, masked ids, broadcast scalars) to the same tensors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from artifact.feature_map import FeatureMap, Masked


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = pd.array(rng.integers(1, 2**62, rows), dtype="Int64")
    ids[rng.random(rows) < 0.1] = pd.NA
    counts = pd.array(rng.poisson(3.0, rows), dtype="Int64")
    counts[rng.random(rows) < 0.2] = pd.NA
    rate = rng.random(rows)
    rate[rng.random(rows) < 0.2] = np.nan
    device = np.array(rng.choice(["mobile", "desktop", "tablet", "tv"], rows), dtype=object)
    device[rng.random(rows) < 0.1] = None
    return pd.DataFrame(
        {
            "ad_id": ids,
            "user_id": np.full(rows, 7, dtype=np.int64),
            "device": device,
            "hour_of_day": np.full(rows, 13, dtype=np.int64),
            "ad_clicks_7d": counts,
            "ad_ctr_7d": rate,
            "spend": np.full(rows, 12.5),
        }
    )


def test_serving_inputs_encode_like_the_training_frame() -> None:
    train = _frame(5000, 0)
    fm = FeatureMap.fit(
        train,
        hashed=["ad_id", "user_id"],
        categorical=["device", "hour_of_day"],
        dense=["ad_clicks_7d", "ad_ctr_7d", "spend"],
        count_like={"ad_clicks_7d"},
    )
    frame = _frame(300, 1)
    expected = fm.transform(frame)
    ids = frame["ad_id"]
    counts = frame["ad_clicks_7d"]
    columns = {
        "ad_id": Masked(ids.fillna(0).to_numpy(np.int64), ids.notna().to_numpy()),
        "user_id": 7,
        "device": frame["device"].to_numpy(),
        "hour_of_day": 13,
        "ad_clicks_7d": counts.to_numpy(np.float64, na_value=np.nan),
        "ad_ctr_7d": frame["ad_ctr_7d"].to_numpy(),
        "spend": 12.5,
    }
    got = fm.transform(columns)
    np.testing.assert_array_equal(got.sparse, expected.sparse)
    np.testing.assert_array_equal(got.dense, expected.dense)
    assert got.missing == expected.missing
    assert got.missing["ad_id"] == int(ids.isna().sum()) > 0
    # A JSON round trip of the map (the manifest) changes nothing.
    again = FeatureMap.from_dict(fm.to_dict()).transform(columns)
    np.testing.assert_array_equal(again.dense, expected.dense)
    # Unknown strings map to the out-of-vocabulary row, like missing ones.
    unknown = fm.transform({**columns, "device": np.array(["vr"] * 300, dtype=object)})
    assert (unknown.sparse[:, 2] == 0).all()


def test_columns_without_information_are_left_out_with_their_reason() -> None:
    from training.train import uninformative

    rows = 50
    frame = _frame(rows, 1)
    frame["user_age_bucket"] = pd.Series([None] * rows, dtype=object)
    frame["ad_rate_null_sometimes"] = np.where(np.arange(rows) % 2 == 0, 0.5, np.nan)
    reasons = {name: uninformative(frame[name]) for name in frame.columns}
    assert reasons["user_age_bucket"] == "missing on every training row"
    assert reasons["user_id"] == "the same value (7) on every training row"
    assert reasons["spend"] == "the same value (12.5) on every training row"
    # One value where present, missing elsewhere: presence itself is information.
    assert reasons["ad_rate_null_sometimes"] is None
    assert reasons["ad_id"] is None and reasons["device"] is None
    left_out = {name: reason for name, reason in reasons.items() if reason}
    fm = FeatureMap.fit(frame, ["ad_id"], ["device"], ["ad_ctr_7d"], set(), left_out=left_out)
    assert FeatureMap.from_dict(fm.to_dict()).left_out == left_out


def test_windows_longer_than_the_log_before_the_test_period_are_left_out_as_warming_up() -> None:
    from datetime import UTC, datetime, timedelta

    from feature_repo import contract
    from training import dataset
    from training.labels import LabelReport
    from training.train import model_inputs

    view = contract.GROUP_BY["user_daily"]
    features = [dataset.ServiceFeature(view.name, f.name, f.dtype) for f in view.view.features]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = 40
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "event_timestamp": [start + timedelta(hours=6 * i) for i in range(rows)],
            "user_id": rng.integers(1, 100, rows),
            "click": rng.integers(0, 2, rows),
            "conversion": np.zeros(rows, dtype=np.int64),
            "category": rng.choice(["a", "b"], rows),
            **{f.name: rng.integers(0, 3, rows) for f in contract.REQUEST_FEATURES},
            **{f.name: rng.random(rows) for f in features},
        }
    )
    frame["split"] = np.where(np.arange(rows) < 32, "train", "test")

    def inputs(test_day: int, history_start: datetime | None, keep: bool = False):
        splits = dataset.Split(
            start, start + timedelta(days=test_day - 1), start + timedelta(days=test_day),
            start + timedelta(days=test_day + 1), "explicit",
        )  # fmt: skip
        labels = LabelReport("ctr", rows, 0, 0, rows, int(frame["click"].sum()), 0, str(start))
        ts = dataset.TrainingSet(frame, "ctr", "x", features, splits, labels, (), history_start)
        return model_inputs(ts, keep_warming_up=keep)

    # Eight days of log before the test period: the 1d and 7d windows are full, 30d not.
    left = inputs(8, start).left_out
    assert set(left) == {f.name for f in features if f.name.endswith("_30d")}
    assert left["user_clicks_30d"] == (
        "warming up: its 30d window is longer than the 8.0 days of log before the test period"
    )
    assert "user_clicks_30d" in inputs(8, start, keep=True).dense  # adstack train --keep-warming-up
    # The history counts from the log's first day, not from the train split's start.
    assert not inputs(8, start - timedelta(days=30)).left_out
    # A set saved before the log's start was recorded counts from the train split.
    assert set(inputs(3, None).left_out) == {
        f.name for f in features if f.name.endswith(("_7d", "_30d"))
    }


def test_an_age_is_capped_at_its_largest_training_value() -> None:
    from datetime import UTC, datetime, timedelta

    from feature_repo import contract
    from training import dataset
    from training.labels import LabelReport
    from training.train import fit_feature_map

    age = contract.AD_AGE.name
    # An age never warms up: it stays an input, read "at least this old" beyond the
    # training rows (every ad there since the log's first day shows the log's length).
    assert contract.warming_up(age, timedelta(days=2)) is None
    train = pd.DataFrame({age: [0.5, 1.0, 2.0, 3.0, np.nan], "other": [1.0, 2.0, 3.0, 4.0, 5.0]})
    fm = FeatureMap.fit(train, [], [], [age, "other"], set(), capped={age})
    assert [d.upper for d in fm.dense] == [3.0, None]
    later = pd.DataFrame({age: [3.0, 5.4, 40.0], "other": [5.0, 9.0, 40.0]})
    dense = fm.transform(later).dense
    assert dense[0, 0] == dense[1, 0] == dense[2, 0]  # beyond 3 days reads as 3 days
    assert dense[0, 1] < dense[1, 1] < dense[2, 1]  # uncapped inputs keep their order
    again = FeatureMap.from_dict(fm.to_dict())
    assert np.array_equal(again.transform(later).dense, dense)
    # Manifests written before the cap existed still load (no cap).
    old = fm.to_dict()
    for d in old["dense"]:
        d.pop("upper")
    assert FeatureMap.from_dict(old).dense[0].upper is None
    # Training's feature map caps the contract's ages, and only them.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "event_timestamp": [start + timedelta(hours=h) for h in range(4)],
            "click": [0, 1, 0, 1],
            "conversion": [0, 0, 0, 0],
            "category": ["a", "b", "a", "b"],
            **{f.name: [1, 2, 1, 2] for f in contract.REQUEST_FEATURES},
            age: [1.0, 2.0, 4.0, 9.0],
            "ad_clicks_1d": [1.0, 2.0, 3.0, 9.0],
            "split": ["train", "train", "train", "test"],
        }
    )
    features = [
        dataset.ServiceFeature("ad_daily", name, contract.FLOAT64) for name in (age, "ad_clicks_1d")
    ]
    splits = dataset.Split(
        start, start + timedelta(hours=1), start + timedelta(hours=3), start + timedelta(hours=4)
    )
    labels = LabelReport("ctr", 4, 0, 0, 4, 2, 0, str(start))
    log_start = start - timedelta(days=2)  # the 1d window is full
    ts = dataset.TrainingSet(frame, "ctr", "x", features, splits, labels, (), log_start)
    uppers = {d.name: d.upper for d in fit_feature_map(ts).dense}
    assert uppers == {age: 4.0, "ad_clicks_1d": None}
