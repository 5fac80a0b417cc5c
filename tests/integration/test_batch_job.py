"""The Spark batch job end to end on simulated events: values against a brute-force
recomputation from the raw events, reruns, and partition overwrite."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from feature_repo import contract
from pipelines import batch_features
from pipelines.simulator import SimulationConfig, write_simulation

FIRST_END, LAST_END = date(2026, 1, 6), date(2026, 1, 10)
CONFIG = SimulationConfig(days=5, users=400, ads=80, impressions_per_day=4_000, seed=11)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "data"
    write_simulation(CONFIG, root / "events", root / "ground_truth")
    return root


@pytest.fixture(scope="module")
def written(spark, data_root: Path) -> dict[str, int]:
    return batch_features.run(spark, data_root, FIRST_END, LAST_END)


def read_view(data_root: Path, name: str) -> pd.DataFrame:
    spec = contract.VIEWS[name]
    frame = ds.dataset(contract.table_dir(data_root, name), format="parquet").to_table().to_pandas()
    return frame.sort_values([*spec.join_keys, "event_timestamp"]).reset_index(drop=True)


def read_events(data_root: Path, table: str) -> pd.DataFrame:
    return ds.dataset(data_root / "events" / table, format="parquet").to_table().to_pandas()


def attributed(data_root: Path) -> pd.DataFrame:
    """Every counted event at its own time, keyed by the impression's user and ad."""
    shown = read_events(data_root, "impressions").merge(
        read_events(data_root, "ads")[["ad_id", "campaign_id", "bid_type"]], on="ad_id"
    )
    clicks = read_events(data_root, "clicks").merge(
        shown, on="impression_id", suffixes=("", "_shown")
    )
    gap = clicks.event_timestamp - clicks.event_timestamp_shown
    clicks = clicks[(gap >= pd.Timedelta(0)) & (gap <= contract.CLICK_WINDOW)]
    conversions = read_events(data_root, "conversions").merge(
        clicks[
            ["impression_id", "event_timestamp", "user_id", "ad_id", "campaign_id", "bid_type"]
        ].rename(columns={"event_timestamp": "clicked_at"}),
        on="impression_id",
    )
    gap = conversions.event_timestamp - conversions.clicked_at
    conversions = conversions[(gap >= pd.Timedelta(0)) & (gap <= contract.ATTRIBUTION_WINDOW)]
    price = shown.set_index("impression_id").price_paid
    columns = ["event_timestamp", "user_id", "ad_id", "campaign_id"]
    return pd.concat(
        [
            shown[columns].assign(kind="impression", spend=0.0),
            clicks[columns].assign(
                kind="click",
                spend=np.where(clicks.bid_type == "CPC", clicks.impression_id.map(price), 0.0),
            ),
            conversions[columns].assign(
                kind="conversion",
                spend=np.where(
                    conversions.bid_type == "CPA", conversions.impression_id.map(price), 0.0
                ),
            ),
        ],
        ignore_index=True,
    )


def window_ends() -> list[pd.Timestamp]:
    first = pd.Timestamp(datetime.combine(FIRST_END, datetime.min.time(), UTC))
    return [first + pd.Timedelta(days=i) for i in range((LAST_END - FIRST_END).days + 1)]


def test_user_windows_match_a_brute_force_recount(data_root: Path, written) -> None:
    events = attributed(data_root)
    expected = []
    for end in window_ends():
        recent = events[
            (events.event_timestamp < end) & (events.event_timestamp >= end - pd.Timedelta(days=31))
        ]
        row = pd.DataFrame({"user_id": recent.user_id.unique()}).assign(event_timestamp=end)
        for window in contract.BATCH_WINDOWS:
            inside = events[
                (events.event_timestamp < end) & (events.event_timestamp >= end - window.length)
            ]
            counts = inside.groupby(["user_id", "kind"]).size().unstack(fill_value=0)
            distinct = inside[inside.kind == "impression"].groupby("user_id").ad_id.nunique()
            for measure, kind in (
                ("impressions", "impression"),
                ("clicks", "click"),
                ("conversions", "conversion"),
            ):
                column = counts[kind] if kind in counts else pd.Series(dtype="int64")
                row[f"user_{measure}_{window.label}"] = (
                    row.user_id.map(column).fillna(0).astype("int64")
                )
            row[f"user_distinct_ads_{window.label}"] = (
                row.user_id.map(distinct).fillna(0).astype("int64")
            )
        expected.append(row)
    expected_frame = pd.concat(expected).sort_values(["user_id", "event_timestamp"])
    actual = read_view(data_root, "user_daily")
    columns = [c for c in expected_frame.columns]
    pd.testing.assert_frame_equal(
        actual[columns].reset_index(drop=True),
        expected_frame[columns].reset_index(drop=True),
        check_dtype=False,
    )
    assert written["user_daily"] == len(expected_frame)


def test_campaign_spend_and_ad_smoothing_match_the_definitions(data_root: Path, written) -> None:
    events = attributed(data_root)
    end = window_ends()[-1]
    week = events[
        (events.event_timestamp < end) & (events.event_timestamp >= end - timedelta(days=7))
    ]
    campaigns = read_view(data_root, "campaign_daily")
    latest = campaigns[campaigns.event_timestamp == end].set_index("campaign_id")
    spend = week.groupby("campaign_id").spend.sum()
    np.testing.assert_allclose(
        latest.campaign_spend_7d.to_numpy(), spend.reindex(latest.index, fill_value=0.0), rtol=1e-9
    )

    ads = read_events(data_root, "ads").set_index("ad_id")
    counts = week.assign(category=week.ad_id.map(ads.category)).pivot_table(
        index=["category", "ad_id"], columns="kind", aggfunc="size", fill_value=0
    )
    by_category = counts.groupby(level="category").sum()
    prior = by_category.click / by_category.impression
    ad_rows = read_view(data_root, "ad_daily")
    ad_rows = ad_rows[ad_rows.event_timestamp == end].set_index("ad_id")
    checked = 0
    for (category, ad_id), row in counts.iterrows():
        smoothed = (row.click + contract.CTR_PRIOR_STRENGTH * prior[category]) / (
            row.impression + contract.CTR_PRIOR_STRENGTH
        )
        assert ad_rows.loc[ad_id, "ad_ctr_7d"] == pytest.approx(smoothed, rel=1e-9)
        checked += 1
    assert checked > 20


def test_columns_types_and_stamps_follow_the_contract(data_root: Path, written) -> None:
    for name, spec in contract.VIEWS.items():
        table = ds.dataset(
            contract.table_dir(data_root, name), format="parquet", partitioning="hive"
        )
        schema = table.schema
        assert schema.names[: len(spec.join_keys) + 1] == [*spec.join_keys, "event_timestamp"]
        assert [n for n in schema.names if n in spec.feature_names] == spec.feature_names
        assert str(schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
        assert written[name] > 0
    stamps = read_view(data_root, "user_daily").event_timestamp
    assert set(stamps) == set(window_ends())


def partition_files(directory: Path) -> dict[str, list[str]]:
    return {
        p.name: sorted(f.name for f in p.glob("*.parquet"))
        for p in sorted(directory.glob("date=*"))
    }


def test_rerun_is_identical_and_replaces_only_its_own_partitions(
    spark, data_root: Path, written
) -> None:
    before = {name: read_view(data_root, name) for name in contract.VIEWS}
    user_dir = contract.table_dir(data_root, "user_daily")
    files_before = partition_files(user_dir)
    stale = user_dir / "date=2026-01-08" / "part-stale.parquet"
    stale.write_bytes(b"left over from an older run")

    batch_features.run(spark, data_root, date(2026, 1, 8), date(2026, 1, 8))

    files_after = partition_files(user_dir)
    assert not stale.exists()
    assert files_after["date=2026-01-08"] != files_before["date=2026-01-08"]
    for day in set(files_before) - {"date=2026-01-08"}:
        assert files_after[day] == files_before[day], f"{day} was rewritten"
    for name in contract.VIEWS:
        pd.testing.assert_frame_equal(read_view(data_root, name), before[name])

    batch_features.run(spark, data_root, FIRST_END, LAST_END)
    for name in contract.VIEWS:
        pd.testing.assert_frame_equal(read_view(data_root, name), before[name])


def test_an_empty_range_end_removes_its_stale_partition(
    spark, tmp_path: Path, data_root: Path
) -> None:
    """A window end with no activity in the longest window keeps no rows from a past run."""
    far = date(2026, 3, 1)
    stale_dir = contract.table_dir(data_root, "user_daily") / f"date={far}"
    stale_dir.mkdir()
    (stale_dir / "part-old.parquet").write_bytes(b"old")
    batch_features.run(spark, data_root, far, far)
    assert not stale_dir.exists()


def test_a_source_without_conversions_gets_zero_conversion_features(tmp_path: Path, spark) -> None:
    """Open Bandit logs clicks but no conversions: the job reads the missing table as empty."""
    config = SimulationConfig(days=2, users=50, ads=10, impressions_per_day=500, seed=2)
    write_simulation(config, tmp_path / "events", tmp_path / "ground_truth")
    shutil.rmtree(tmp_path / "events" / "conversions", ignore_errors=True)
    assert not (tmp_path / "events" / "conversions").exists()
    end = config.start.date() + timedelta(days=2)
    written = batch_features.run(spark, tmp_path, end, end)
    assert written["user_daily"] > 0
    users = ds.dataset(contract.table_dir(tmp_path, "user_daily"), format="parquet").to_table()
    assert users.column("user_conversions_1d").to_numpy().sum() == 0
    assert users.column("user_clicks_1d").to_numpy().sum() > 0
