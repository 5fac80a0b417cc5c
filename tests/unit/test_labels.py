"""Label clocks on literal events: click window, attribution window, open windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from core import events
from training.labels import labelled_impressions

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def write(root, table, rows) -> None:
    frame = pd.DataFrame(rows)
    for column in table.columns:
        if column not in frame:
            frame[column] = None
    events.write_partitions(table, events.to_arrow(table, frame), root / "events", "test")


def test_labels_follow_the_click_and_attribution_clocks(tmp_path) -> None:
    shown = [
        {"impression_id": i, "request_id": i, "event_timestamp": T0 + timedelta(hours=i),
         "user_id": 1, "ad_id": 7, "position": 1}
        for i in range(1, 6)
    ]  # fmt: skip
    write(tmp_path, events.IMPRESSIONS, shown)
    write(tmp_path, events.ADS, [{"ad_id": 7, "campaign_id": 70, "advertiser_id": 700,
                                  "category": "shoes", "format": "banner", "bid_type": "CPC",
                                  "created_at": T0 - timedelta(days=1)}])  # fmt: skip
    write(tmp_path, events.CLICKS, [
        {"impression_id": 1, "event_timestamp": T0 + timedelta(hours=1, minutes=5)},  # in time
        {"impression_id": 2, "event_timestamp": T0 + timedelta(hours=3, minutes=1)},  # too late
        {"impression_id": 3, "event_timestamp": T0 + timedelta(hours=3, seconds=30)},
    ])  # fmt: skip
    write(tmp_path, events.CONVERSIONS, [
        {"impression_id": 1, "event_timestamp": T0 + timedelta(days=6), "value": 1.0},
        {"impression_id": 3, "event_timestamp": T0 + timedelta(days=8), "value": 1.0},  # > 7 d
    ])  # fmt: skip
    start, end = T0, T0 + timedelta(hours=6)
    # CTR: cut-off 30 minutes after the last impression leaves it out (window open).
    frame, report = labelled_impressions(
        tmp_path, "ctr", start, end, T0 + timedelta(hours=5, minutes=30)
    )
    assert frame["impression_id"].tolist() == [1, 2, 3, 4]
    assert frame["click"].tolist() == [1, 0, 1, 0]
    assert frame["conversion"].tolist() == [1, 0, 0, 0]
    assert report.open_label_window == 1 and report.rows == 4
    assert frame["campaign_id"].eq(70).all() and frame["category"].eq("shoes").all()
    # CVR: the whole click + attribution window must have closed.
    frame, report = labelled_impressions(
        tmp_path, "cvr", start, end, T0 + timedelta(days=7, hours=3)
    )
    assert frame["impression_id"].tolist() == [1, 2]
    assert report.open_label_window == 3
