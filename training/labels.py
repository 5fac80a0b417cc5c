"""Labelled impressions: the entity rows of a training set and their outcomes.

Label clocks (DESIGN.md, time semantics; the lengths live in the feature contract):

- ``click`` is 1 when a click on the impression came within ``CLICK_WINDOW`` of it;
- ``conversion`` is 1 when a conversion came within ``ATTRIBUTION_WINDOW`` of that click.

A row enters a data set only once its label window has closed by the cut-off (the
instant the log was read): for the click model ``CLICK_WINDOW`` after the impression,
for the conversion model ``CLICK_WINDOW + ATTRIBUTION_WINDOW`` after it, whether or not
it was clicked. Leaving out only the clicked rows whose attribution is still open would
bias the data towards non-clicks near the cut-off; the whole window keeps every day's
sample unbiased. Rows left out are counted in the report, never labelled negative.

Each row carries what an ad request knows: the user, the ad and its campaign,
advertiser and category (from the catalog), the instant, and the request context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from core import context, events, units
from feature_repo import contract

Task = Literal["ctr", "cvr"]
TASKS: tuple[Task, ...] = ("ctr", "cvr")
LABEL_COLUMNS = ("click", "conversion")


def label_window(task: Task) -> timedelta:
    """How long after an impression its label for ``task`` can still change."""
    if task == "ctr":
        return contract.CLICK_WINDOW
    return contract.CLICK_WINDOW + contract.ATTRIBUTION_WINDOW


@dataclass(frozen=True)
class LabelReport:
    task: str
    impressions: int  # impressions in [start, end)
    open_label_window: int  # left out: label window still open at the cut-off
    without_ad: int  # left out: the ad is not in the catalog
    rows: int
    clicks: int
    conversions: int
    cutoff: str

    def as_dict(self) -> dict:
        return asdict(self)


def _read(table: events.Table, root: Path, columns: list[str]) -> pd.DataFrame:
    return events.read_table(table, events.events_root(root), columns).to_pandas()


def labelled_impressions(
    data_root: Path, task: Task, start: datetime, end: datetime, cutoff: datetime
) -> tuple[pd.DataFrame, LabelReport]:
    """Impressions shown in ``[start, end)`` whose ``task`` label is final at ``cutoff``.

    Columns: impression_id, event_timestamp (UTC, µs), the ``MODEL_ENTITY_KEYS``, the
    request context (position, placement, device, country, and the declared context
    fields' ``ctx_`` columns), click and conversion (0/1).
    Sorted by time, then impression id.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if not start < end:
        raise ValueError(f"start {start} must be before end {end}")
    root = events.events_root(data_root)
    fields = context.declared(data_root)
    shown = events.read_table(
        context.impressions_table(fields),
        root,
        [
            "impression_id",
            "event_timestamp",
            "user_id",
            "ad_id",
            "position",
            "placement",
            "device",
            "country",
            *(f.column for f in fields),
        ],
    )
    micros = pc.cast(shown["event_timestamp"], "int64")
    in_range = pc.and_(
        pc.greater_equal(micros, units.instant_micros(start)),
        pc.less(micros, units.instant_micros(end)),
    )
    frame = shown.filter(in_range).to_pandas()
    total = len(frame)
    shown_at = units.series_micros(frame["event_timestamp"])
    closed = shown_at + label_window(task) // timedelta(microseconds=1) <= units.instant_micros(
        cutoff
    )
    frame = frame[closed]

    ads = _read(events.ADS, data_root, ["ad_id", "campaign_id", "advertiser_id", "category"])
    ads = ads.drop_duplicates("ad_id", keep="last")
    with_ad = frame.merge(ads, on="ad_id", how="inner")
    without_ad = len(frame) - len(with_ad)

    labels = outcomes(data_root, with_ad[["impression_id", "event_timestamp"]])
    frame = with_ad.merge(labels, on="impression_id", how="left")
    for column in LABEL_COLUMNS:
        frame[column] = frame[column].fillna(0).astype(np.int8)
    frame = frame.sort_values(["event_timestamp", "impression_id"], kind="stable")
    frame = frame.reset_index(drop=True)
    report = LabelReport(
        task=task,
        impressions=total,
        open_label_window=int((~closed).sum()),
        without_ad=without_ad,
        rows=len(frame),
        clicks=int(frame["click"].sum()),
        conversions=int(frame["conversion"].sum()),
        cutoff=pd.Timestamp(cutoff).isoformat(),
    )
    return frame, report


def outcomes(data_root: Path, shown: pd.DataFrame) -> pd.DataFrame:
    """``click`` and ``conversion`` for the impressions in ``shown`` (impression_id,
    event_timestamp), by the label clocks; only impressions with an outcome appear."""
    click_window = contract.CLICK_WINDOW // timedelta(microseconds=1)
    attribution = contract.ATTRIBUTION_WINDOW // timedelta(microseconds=1)
    clicks = _read(events.CLICKS, data_root, ["impression_id", "event_timestamp"])
    clicks = clicks.merge(shown, on="impression_id", suffixes=("", "_shown"))
    gap = _gap(clicks["event_timestamp"], clicks["event_timestamp_shown"])
    clicks = clicks[(gap >= 0) & (gap <= click_window)]
    # The first qualifying click is the one a conversion is attributed to.
    clicks = clicks.sort_values("event_timestamp").drop_duplicates("impression_id")
    conversions = _read(events.CONVERSIONS, data_root, ["impression_id", "event_timestamp"])
    conversions = conversions.merge(
        clicks[["impression_id", "event_timestamp"]], on="impression_id", suffixes=("", "_click")
    )
    gap = _gap(conversions["event_timestamp"], conversions["event_timestamp_click"])
    converted = conversions.loc[(gap >= 0) & (gap <= attribution), "impression_id"].unique()
    result = pd.DataFrame({"impression_id": clicks["impression_id"].to_numpy(), "click": 1})
    result["conversion"] = result["impression_id"].isin(converted).astype(np.int8)
    return result


def _gap(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    return units.series_micros(later) - units.series_micros(earlier)
