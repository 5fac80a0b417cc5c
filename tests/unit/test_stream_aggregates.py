"""Stream aggregates on small literal events: window edges, expiry rows, lateness, and
equality with the recomputation from raw events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.event_bus import CLICK, CONVERSION, IMPRESSION, Events, decode
from core.units import span_micros
from feature_repo import contract
from pipelines.stream_aggregates import STREAM_VIEWS, StreamAggregator, recompute

T0 = int(pd.Timestamp("2026-01-05 10:00:00", tz="UTC").value // 1000)
MIN = 60_000_000
USER, AD = STREAM_VIEWS["user_stream"], STREAM_VIEWS["ad_stream"]
CAMPAIGN = STREAM_VIEWS["campaign_stream"]
LATENESS = span_micros(contract.ALLOWED_LATENESS)


def events(*rows: tuple[int, float, int]) -> Events:
    """(kind, minutes after 10:00, user) rows; ad = user, campaign 1, CPC cost on clicks."""
    kind = np.array([r[0] for r in rows], np.int8)
    return Events(
        kind=kind,
        ts=np.array([T0 + int(r[1] * MIN) for r in rows], np.int64),
        user_id=np.array([r[2] for r in rows], np.int64),
        ad_id=np.array([r[2] for r in rows], np.int64),
        campaign_id=np.ones(len(rows), np.int64),
        impression_id=np.arange(len(rows), dtype=np.int64),
        cost_micros=np.where(kind == CLICK, 500_000, 0).astype(np.int64),
    )


def at(minutes: float) -> int:
    return T0 + int(minutes * MIN)


def test_the_5_minute_window_counts_whole_minute_tiles_and_excludes_its_own_instant() -> None:
    batch = events(
        (IMPRESSION, 0.5, 7), (IMPRESSION, 4.99, 7), (CLICK, 6.1, 7), (IMPRESSION, 6.2, 7)
    )
    values = recompute(USER, batch, np.array([7, 7, 7]), np.array([at(6.2), at(6.3), at(11)]))
    # At 10:06:12 the window starts at 10:01 (floor to the minute, minus 5): the event at
    # 10:00:30 is out; the one at exactly 10:06:12 is not yet counted.
    assert values.user_impressions_5m.tolist() == [1, 2, 1]
    assert values.user_clicks_5m.tolist() == [1, 1, 1]
    assert values.user_impressions_1h.tolist() == [2, 3, 3]


def test_rows_are_emitted_when_a_tile_leaves_a_window() -> None:
    aggregator = StreamAggregator([USER], LATENESS)
    aggregator.apply(events((IMPRESSION, 0.5, 7)))
    step = aggregator.apply(events((IMPRESSION, 7.5, 8)))
    rows = step.rows["user_stream"].set_index(["user_id", "event_timestamp"])
    # User 7's impression (tile 10:00) leaves the 5-minute window at 10:06, while user
    # 8's row is stamped one microsecond after its event.
    expiry = rows.loc[(7, pd.Timestamp(at(6), unit="us", tz="UTC"))]
    assert expiry.user_impressions_5m == 0 and expiry.user_impressions_1h == 1
    fresh = rows.loc[(8, pd.Timestamp(at(7.5) + 1, unit="us", tz="UTC"))]
    assert fresh.user_impressions_5m == 1
    assert len(rows) == 2


def test_out_of_order_events_land_in_their_tiles_and_late_ones_are_reported() -> None:
    aggregator = StreamAggregator([USER], LATENESS)
    aggregator.apply(events((IMPRESSION, 20.0, 7)))
    step = aggregator.apply(events((IMPRESSION, 16.5, 7), (CLICK, 14.0, 7), (IMPRESSION, 21.0, 7)))
    # 16:30 is 3.5 minutes behind 20:00 (within lateness), 14:00 is 6 minutes behind.
    assert step.late.tolist() == [1]
    row = step.rows["user_stream"].iloc[-1]
    assert (row.user_impressions_5m, row.user_clicks_5m, row.user_impressions_1h) == (3, 0, 3)
    later = aggregator.apply(events((IMPRESSION, 22.5, 9))).rows["user_stream"]
    # 10:16 leaves the 5-minute window at 10:22: user 7 gets a row there, down by one.
    expiry = later[later.user_id == 7].iloc[0]
    assert expiry.event_timestamp == pd.Timestamp(at(22), unit="us", tz="UTC")
    assert expiry.user_impressions_5m == 2


def test_ctr_is_null_without_impressions_and_spend_counts_today_only() -> None:
    batch = events((CLICK, -30.0, 3), (IMPRESSION, 0.0, 4), (CLICK, 1.0, 4), (CONVERSION, 2, 4))
    ads = recompute(AD, batch, np.array([3, 4]), np.array([at(3), at(3)]))
    assert np.isnan(ads.ad_ctr_5m[0]) and ads.ad_ctr_5m[1] == 1.0
    midnight = int(pd.Timestamp("2026-01-06", tz="UTC").value // 1000)
    campaign = recompute(CAMPAIGN, batch, np.array([1, 1]), np.array([at(3), midnight + 1]))
    assert campaign.campaign_spend_today.tolist() == [1.0, 0.0]
    assert campaign.campaign_spend_1h.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_row_equals_the_recomputation_from_the_events_processed(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6_000
    ts = (
        np.sort(T0 + rng.integers(0, 20 * 3600 * 1_000_000, n))
        + rng.integers(-200, 200, n) * 1_000_000
    )
    stream = Events(
        kind=rng.choice(3, n, p=[0.8, 0.15, 0.05]).astype(np.int8),
        ts=ts,
        user_id=rng.integers(1, 80, n),
        ad_id=rng.integers(1, 20, n),
        campaign_id=rng.integers(1, 5, n),
        impression_id=np.arange(n),
        cost_micros=rng.integers(0, 4, n) * 125_000,
    )
    aggregator = StreamAggregator(list(STREAM_VIEWS.values()), LATENESS)
    processed: list[np.ndarray] = []
    start, checked = 0, 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 900)))
        step = aggregator.apply(stream.take(np.arange(start, stop)))
        kept = np.ones(stop - start, bool)
        kept[step.late] = False
        processed.append(np.arange(start, stop)[kept])
        seen = stream.take(np.concatenate(processed))
        for name, rows in step.rows.items():
            view = STREAM_VIEWS[name]
            stamps = rows.event_timestamp.astype("int64").to_numpy() // 1000
            expected = recompute(view, seen, rows[view.entity].to_numpy(), stamps)
            pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected, check_dtype=False)
            checked += len(rows)
        start = stop
    assert checked > 5_000
    assert 0 < n - len(np.concatenate(processed)) < n // 10  # some, not most, were late


def test_decoding_keeps_good_entries_and_names_what_is_wrong_with_the_others() -> None:
    good = {
        b"kind": b"click",
        b"ts": b"1",
        b"user_id": b"2",
        b"ad_id": b"3",
        b"campaign_id": b"4",
        b"impression_id": b"5",
        b"cost_micros": b"0",
    }
    entries = [
        (b"1-0", good),
        (b"1-1", {**good, b"kind": b"view"}),
        (b"1-2", {k: v for k, v in good.items() if k != b"ad_id"}),
        (b"1-3", {**good, b"ts": b"soon"}),
        (b"1-4", {**good, b"cost_micros": b"-5"}),
        (b"1-5", None),
    ]
    decoded = decode(entries)
    assert decoded.ids == [b"1-0"] and decoded.events.ad_id.tolist() == [3]
    reasons = {entry_id: reason for entry_id, _, reason in decoded.invalid}
    assert "unknown kind" in reasons[b"1-1"] and "ad_id" in reasons[b"1-2"]
    assert "ts is not an integer" in reasons[b"1-3"] and "negative" in reasons[b"1-4"]
    assert decoded.vanished == [b"1-5"]
