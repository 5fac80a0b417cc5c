"""Replay canonical events onto the event bus, in event-time order, at a speed factor.

The replayed stream is what live traffic would have produced: every impression, every
click within ``CLICK_WINDOW`` of its impression and every conversion within
``ATTRIBUTION_WINDOW`` of its click (the clocks the batch features and the labels use),
each at its own time and carrying its impression's user, ad and campaign. Billing
follows the batch job: a CPC ad's clearing price is billed on its click, a CPA ad's on
its conversion.

Pacing: with ``speed`` S, the event at time ``t`` is sent ``(t - t0) / S`` seconds
after the replay started (3600: an hour of traffic per second); ``speed=0`` sends as
fast as the producer can. Event times are not changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core import events as canonical
from core import units
from core.event_bus import CLICK, CONVERSION, IMPRESSION, EventProducer, Events
from feature_repo import contract


def _read(table: canonical.Table, events_root: Path, columns: list[str]) -> pd.DataFrame:
    frame = canonical.read_table(table, events_root, columns).to_pandas()
    for column in columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].astype("datetime64[us, UTC]").astype("int64")
    return frame


def stream_events(
    data_root: Path, start: datetime | None = None, end: datetime | None = None
) -> Events:
    """The events of ``[start, end)`` (all when None) as the bus carries them, by time.

    Clicks and conversions are attributed over all of the log, so a click in the range
    whose impression came just before ``start`` still counts.
    """
    root = canonical.events_root(data_root)
    impressions = _read(
        canonical.IMPRESSIONS,
        root,
        ["impression_id", "event_timestamp", "user_id", "ad_id", "price_paid"],
    )
    ads = _read(canonical.ADS, root, ["ad_id", "campaign_id", "bid_type"])
    shown = impressions.merge(ads, on="ad_id", how="inner", validate="many_to_one")
    shown["price_micros"] = units.money_micros(shown.price_paid.fillna(0.0).to_numpy())
    clicks = _read(canonical.CLICKS, root, ["impression_id", "event_timestamp"])
    clicks = clicks.merge(shown, on="impression_id", suffixes=("", "_shown"))
    gap = clicks.event_timestamp - clicks.event_timestamp_shown
    clicks = clicks[(gap >= 0) & (gap <= units.span_micros(contract.CLICK_WINDOW))]
    conversions = _read(canonical.CONVERSIONS, root, ["impression_id", "event_timestamp"])
    conversions = conversions.merge(
        clicks[["impression_id", "event_timestamp", "user_id", "ad_id", "campaign_id"]]
        .rename(columns={"event_timestamp": "clicked_at"})
        .merge(shown[["impression_id", "bid_type", "price_micros"]], on="impression_id"),
        on="impression_id",
    )
    gap = conversions.event_timestamp - conversions.clicked_at
    conversions = conversions[(gap >= 0) & (gap <= units.span_micros(contract.ATTRIBUTION_WINDOW))]

    def rows(frame: pd.DataFrame, kind: int, billed_as: str | None) -> pd.DataFrame:
        billed = (frame.bid_type == billed_as) if billed_as else np.zeros(len(frame), bool)
        return pd.DataFrame(
            {
                "kind": np.full(len(frame), kind, np.int8),
                "ts": frame.event_timestamp.to_numpy(np.int64),
                "user_id": frame.user_id.to_numpy(np.int64),
                "ad_id": frame.ad_id.to_numpy(np.int64),
                "campaign_id": frame.campaign_id.to_numpy(np.int64),
                "impression_id": frame.impression_id.to_numpy(np.int64),
                "cost_micros": np.where(billed, frame.price_micros, 0).astype(np.int64),
            }
        )

    frame = pd.concat(
        [
            rows(shown, IMPRESSION, units.billed_bid_type("impression")),
            rows(clicks, CLICK, units.billed_bid_type("click")),
            rows(conversions, CONVERSION, units.billed_bid_type("conversion")),
        ],
        ignore_index=True,
    )
    if start is not None:
        frame = frame[frame.ts >= _epoch_micros(start)]
    if end is not None:
        frame = frame[frame.ts < _epoch_micros(end)]
    # Stable: an impression precedes its own click when both carry the same microsecond.
    frame = frame.sort_values(["ts", "kind"], kind="stable")
    return Events.from_frame(frame.reset_index(drop=True))


def _epoch_micros(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError(f"{instant} has no time zone; pass UTC instants")
    return units.instant_micros(instant)


@dataclass(frozen=True)
class ReplayReport:
    events: int
    seconds: float
    first_ts: int | None
    last_ts: int | None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def replay(
    producer: EventProducer,
    events: Events,
    speed: float,
    chunk: int = 2_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_sent: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Send ``events`` (sorted by time) at ``speed`` times real time; 0 = unpaced.

    ``on_sent(sent, ts)`` is called after each chunk with the number of events sent so
    far and the event time (epoch microseconds) of the last one."""
    if speed < 0:
        raise ValueError("speed must be 0 (as fast as possible) or positive")
    if len(events) and (np.diff(events.ts) < 0).any():
        raise ValueError("events must be sorted by time")
    started = clock()
    sent = 0
    while sent < len(events):
        if speed == 0:
            due = min(len(events), sent + chunk)
        else:
            replayed_micros = (clock() - started) * speed * units.MICROS_PER_SECOND
            due = int(np.searchsorted(events.ts, events.ts[0] + replayed_micros, side="right"))
            due = min(due, sent + chunk)
            if due == sent:
                wait = (events.ts[sent] - events.ts[0]) / units.MICROS_PER_SECOND / speed - (
                    clock() - started
                )
                sleep(min(max(wait, 0.0), 0.5))
                continue
        producer.send(events.take(np.arange(sent, due)))
        sent = due
        if on_sent is not None:
            on_sent(sent, int(events.ts[sent - 1]))
    first = int(events.ts[0]) if len(events) else None
    last = int(events.ts[-1]) if len(events) else None
    return ReplayReport(sent, clock() - started, first, last)
