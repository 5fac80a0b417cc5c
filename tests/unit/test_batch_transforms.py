"""The batch job's pure transforms on small literal rows, with one shared SparkSession."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feature_repo.contract import ATTRIBUTION_WINDOW, CLICK_WINDOW, Window
from pipelines import batch_features as bf

ONE_AND_TWO_DAYS = (Window("1d", timedelta(days=1)), Window("2d", timedelta(days=2)))
EVENTS_SCHEMA = "event_timestamp timestamp, user_id long, impressions long, clicks long"
ROLLED_SCHEMA = (
    "user_id long, end_day int, impressions_1d long, clicks_1d long, "
    "impressions_2d long, clicks_2d long"
)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, micro, tzinfo=UTC)


def end(day: int) -> int:
    return (date(2026, 1, day) - bf.EPOCH).days


def test_window_end_excludes_its_own_instant_and_keeps_one_zero_row(spark) -> None:
    events = spark.createDataFrame(
        [
            (at(5, 23, 59, 59, 999_999), 1, 1, 0),
            (at(6), 1, 1, 0),  # exactly at the window end of Jan 6: belongs to Jan 7
            (at(6, 0, 0, 10), 1, 0, 1),
        ],
        EVENTS_SCHEMA,
    )
    partials = bf.daily_partials(events, ["user_id"], ["impressions", "clicks"])
    rolled = bf.roll_windows(
        partials,
        ["user_id"],
        ["impressions", "clicks"],
        date(2026, 1, 5),
        date(2026, 1, 12),
        ONE_AND_TWO_DAYS,
    )
    expected = spark.createDataFrame(
        [
            (1, end(6), 1, 0, 1, 0),
            (1, end(7), 1, 1, 2, 1),
            (1, end(8), 0, 0, 1, 1),
            (1, end(9), 0, 0, 0, 0),  # activity stopped: one all-zero row, then nothing
        ],
        ROLLED_SCHEMA,
    )
    assertDataFrameEqual(rolled, expected)


def test_range_limits_the_ends_but_not_the_history(spark) -> None:
    events = spark.createDataFrame(
        [(at(3, 12), 7, 1, 0), (at(4, 12), 7, 1, 1), (at(5, 12), 7, 1, 0)], EVENTS_SCHEMA
    )
    partials = bf.daily_partials(events, ["user_id"], ["impressions", "clicks"])
    rolled = bf.roll_windows(
        partials,
        ["user_id"],
        ["impressions", "clicks"],
        date(2026, 1, 6),
        date(2026, 1, 6),
        ONE_AND_TWO_DAYS,
    )
    expected = spark.createDataFrame([(7, end(6), 1, 0, 2, 1)], ROLLED_SCHEMA)
    assertDataFrameEqual(rolled, expected)


def test_distinct_ads_are_exact_over_each_window(spark) -> None:
    events = spark.createDataFrame(
        [
            (at(5, 9), 1, 100, 1),
            (at(5, 10), 1, 100, 1),  # same ad twice on one day
            (at(6, 9), 1, 200, 1),
            (at(7, 9), 1, 100, 1),
        ],
        "event_timestamp timestamp, user_id long, ad_id long, impressions long",
    )
    partials = bf.daily_partials(events, ["user_id"], ["impressions"])
    rolled = bf.roll_windows(
        partials,
        ["user_id"],
        ["impressions"],
        date(2026, 1, 5),
        date(2026, 1, 12),
        ONE_AND_TWO_DAYS,
        steps=bf.distinct_steps(events, windows=ONE_AND_TWO_DAYS),
    ).select("user_id", "end_day", "distinct_ads_1d", "distinct_ads_2d")
    expected = spark.createDataFrame(
        [
            (1, end(6), 1, 1),  # Jan 5: ad 100
            (1, end(7), 1, 2),  # Jan 6: ad 200; Jan 5-6: 100, 200
            (1, end(8), 1, 2),  # Jan 7: ad 100; Jan 6-7: 200, 100
            (1, end(9), 0, 1),  # Jan 7-8: 100
            (1, end(10), 0, 0),
        ],
        "user_id long, end_day int, distinct_ads_1d long, distinct_ads_2d long",
    )
    assertDataFrameEqual(rolled, expected)


def test_clicks_and_conversions_count_within_their_clocks_and_bill_by_bid_type(spark) -> None:
    t0 = at(5, 10)
    impressions = spark.createDataFrame(
        [
            (1, t0, 11, 10, 0.5),  # CPC ad
            (2, t0, 12, 20, 3.0),  # CPA ad
            (3, t0, 13, 10, 0.5),
            (4, t0, 14, 10, 0.5),
        ],
        "impression_id long, event_timestamp timestamp, user_id long, ad_id long, "
        "price_paid double",
    )
    clicks = spark.createDataFrame(
        [
            (1, t0 + timedelta(minutes=1)),
            (2, t0 + timedelta(seconds=5)),
            (3, t0 + CLICK_WINDOW),  # on the clock's edge: counts
            (4, t0 + CLICK_WINDOW + timedelta(microseconds=1)),  # too late
        ],
        "impression_id long, event_timestamp timestamp",
    )
    conversions = spark.createDataFrame(
        [
            (2, t0 + timedelta(seconds=5) + ATTRIBUTION_WINDOW),
            (1, t0 + timedelta(minutes=1) + ATTRIBUTION_WINDOW + timedelta(seconds=1)),
        ],
        "impression_id long, event_timestamp timestamp",
    )
    ads = spark.createDataFrame(
        [(10, 1000, 7, "shoes", "CPC"), (20, 2000, 8, "games", "CPA")],
        "ad_id long, campaign_id long, advertiser_id long, category string, bid_type string",
    )
    activity = bf.attributed_events(impressions, clicks, conversions, ads)
    row = "timestamp, long, long, long, long, string, long, long, long, long"  # spend in micros
    expected = spark.createDataFrame(
        [
            (t0, 11, 10, 1000, 7, "shoes", 1, 0, 0, 0),
            (t0, 12, 20, 2000, 8, "games", 1, 0, 0, 0),
            (t0, 13, 10, 1000, 7, "shoes", 1, 0, 0, 0),
            (t0, 14, 10, 1000, 7, "shoes", 1, 0, 0, 0),
            (t0 + timedelta(minutes=1), 11, 10, 1000, 7, "shoes", 0, 1, 0, 500_000),
            (t0 + timedelta(seconds=5), 12, 20, 2000, 8, "games", 0, 1, 0, 0),
            (t0 + CLICK_WINDOW, 13, 10, 1000, 7, "shoes", 0, 1, 0, 500_000),
            (
                t0 + timedelta(seconds=5) + ATTRIBUTION_WINDOW,
                12,
                20,
                2000,
                8,
                "games",
                0,
                0,
                1,
                3_000_000,
            ),
        ],  # fmt: skip
        ", ".join(
            f"{name} {kind}"
            for name, kind in zip(
                [
                    "event_timestamp",
                    "user_id",
                    "ad_id",
                    "campaign_id",
                    "advertiser_id",
                    "category",
                    "impressions",
                    "clicks",
                    "conversions",
                    "spend",
                ],
                row.split(", "),
                strict=True,
            )
        ),  # fmt: skip
    )
    assertDataFrameEqual(activity, expected)


def test_rates_are_null_without_a_denominator_and_smoothing_uses_the_prior(spark) -> None:
    frame = spark.createDataFrame(
        [(0, 0, None), (0, 0, 0.1), (5, 10, 0.1), (30, 20, 0.5)],
        "num long, den long, prior double",
    )
    result = frame.select(
        bf.rate_column(F.col("num"), F.col("den")).alias("raw"),
        bf.smoothed_rate(F.col("num"), F.col("den"), F.col("prior"), 10.0).alias("smoothed"),
    )
    expected = spark.createDataFrame(
        [
            (None, None),  # nothing known: stays null, never 1 or 0
            (None, 0.1),  # a new entity starts at its category's rate
            (0.5, (5 + 1.0) / 20),
            (1.0, 1.0),  # conversions counted at their own time can outrun clicks: capped
        ],
        "raw double, smoothed double",
    )
    assertDataFrameEqual(result, expected)


@pytest.mark.parametrize("first_end", [date(2026, 2, 1), date(2026, 3, 31)])
def test_history_start_covers_the_longest_window_and_the_label_clocks(first_end: date) -> None:
    start = bf.history_start(first_end)
    needed = timedelta(days=30 + 1) + CLICK_WINDOW + ATTRIBUTION_WINDOW
    assert first_end - start >= needed
    assert first_end - start < needed + timedelta(days=1)
