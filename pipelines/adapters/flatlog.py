"""The flat log: the shape every log adapter maps its source into.

Real logs usually hold one row per impression (or per click) with the labels beside
it. An adapter renames and derives columns into this flat shape; parsing, validation
and the split into canonical tables (impressions, clicks, conversions, ads, campaigns,
users) are then the same for every source.

Parsing never drops a row: a value that does not parse becomes null and the row gets
a reason (``parse:<column>``), so validation quarantines it with the raw text kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import events
from core.context import ContextField
from core.ids import hash_ids

ID = "id"
TIME = "timestamp"
FLOAT = "float"
INT = "int"
LABEL = "label"
TEXT = "text"

# Flat columns and their kinds. Impression columns come from the canonical schema.
FLAT_COLUMNS: dict[str, str] = {
    "impression_id": ID,
    "request_id": ID,
    "event_timestamp": TIME,
    "user_id": ID,
    "ad_id": ID,
    "position": INT,
    "placement": TEXT,
    "device": TEXT,
    "country": TEXT,
    "bid": FLOAT,
    "price_paid": FLOAT,
    "logging_propensity": FLOAT,
    # Labels and their times: a click (0/1) and when, a conversion (0/1), when, worth.
    "click": LABEL,
    "click_timestamp": TIME,
    "conversion": LABEL,
    "conversion_timestamp": TIME,
    "conversion_value": FLOAT,
    # The ad's catalog entry and the user's profile, as far as the log knows them.
    "campaign_id": ID,
    "advertiser_id": ID,
    "category": TEXT,
    "format": TEXT,
    "bid_type": TEXT,
    "age_bucket": TEXT,
    "gender": TEXT,
    "os": TEXT,
}


def synthetic_ids(prefix: str, rows: pd.Series) -> pd.Series:
    """Ids for sources that have none: a hash of the file and the row number."""
    return hash_ids(prefix + ":" + rows.astype("string"))


@dataclass
class ParsedLog:
    """A typed frame plus, per reason, a mask of the rows that failed to parse."""

    frame: pd.DataFrame
    raw: pd.DataFrame
    parse_failures: dict[str, np.ndarray] = field(default_factory=dict)


def _failed(raw: pd.Series, parsed: pd.Series) -> np.ndarray:
    """Rows whose raw value is present (not null, not blank) yet did not parse."""
    failed = parsed.isna().to_numpy() & raw.notna().to_numpy()
    if failed.any():
        failed[failed] = (raw[failed].astype("string").str.strip() != "").to_numpy(bool)
    return failed


def parse_column(raw: pd.Series, kind: str, time_format: str | None = None) -> pd.Series:
    if kind in (ID, INT, LABEL):
        if pd.api.types.is_integer_dtype(raw.dtype):
            return raw.astype("Int64")
        numbers = pd.to_numeric(raw, errors="coerce")
        whole = numbers.where(np.isfinite(numbers) & (numbers == np.floor(numbers)))
        # Beyond 2**53 a float cannot hold an id exactly: parse those as text instead.
        big = whole.abs() >= 2**53
        out = whole.where(~big).astype("Int64")
        if big.any():
            out[big] = pd.to_numeric(raw[big].astype("string"), errors="coerce").astype("Int64")
        return out
    if kind == FLOAT:
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    if kind == TIME:
        if pd.api.types.is_datetime64_any_dtype(raw.dtype):
            parsed = raw if raw.dt.tz is not None else raw.dt.tz_localize("UTC")
            return parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        # Without a declared format, any ISO 8601 form is accepted, row by row.
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format=time_format or "ISO8601")
        return parsed.astype("datetime64[us, UTC]")
    if kind == TEXT:
        return raw.astype("string")
    raise ValueError(f"unknown column kind {kind!r}")


def parse_flat(
    raw: pd.DataFrame, time_format: str | None = None, kinds: dict[str, str] = FLAT_COLUMNS
) -> ParsedLog:
    """Type every column of ``kinds`` present in ``raw``; absent ones become all-null."""
    n = len(raw)
    raw = raw.reset_index(drop=True)
    typed: dict[str, pd.Series] = {}
    failures: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if name not in raw.columns:
            typed[name] = _null_column(kind, n)
            continue
        parsed = parse_column(raw[name], kind, time_format if kind == TIME else None)
        failed = _failed(raw[name], parsed) if kind != TEXT else np.zeros(n, dtype=bool)
        if failed.any():
            failures[f"parse:{name}"] = failed
        typed[name] = parsed
    return ParsedLog(pd.DataFrame(typed), raw, failures)


def _null_column(kind: str, n: int) -> pd.Series:
    if kind in (ID, INT, LABEL):
        return pd.Series(pd.array([pd.NA] * n, dtype="Int64"))
    if kind == FLOAT:
        return pd.Series(np.full(n, np.nan))
    if kind == TIME:
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    return pd.Series(pd.array([pd.NA] * n, dtype="string"))


def fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Logs without requests or slots: each impression is its own request, in slot 1."""
    frame["request_id"] = frame["request_id"].fillna(frame["impression_id"])
    frame["position"] = frame["position"].fillna(1)
    return frame


def to_canonical(
    good: pd.DataFrame, context: tuple[ContextField, ...] = ()
) -> dict[str, pd.DataFrame]:
    """Split validated flat rows into the six canonical tables (the impressions with
    the declared ``context`` columns).

    A click without its own time is stamped at the impression time; a conversion
    without its own time at the click time. Catalog rows take the first value the
    log shows for each id and are stamped with the id's first appearance.
    """
    imp = good[events.IMPRESSIONS.columns + [f.column for f in context]]

    clicked = good["click"].fillna(0).astype(bool).to_numpy()
    click_ts = good["click_timestamp"].fillna(good["event_timestamp"])
    clicks = pd.DataFrame(
        {"impression_id": good["impression_id"][clicked], "event_timestamp": click_ts[clicked]}
    )
    converted = good["conversion"].fillna(0).astype(bool).to_numpy()
    conversions = pd.DataFrame(
        {
            "impression_id": good["impression_id"][converted],
            "event_timestamp": good["conversion_timestamp"].fillna(click_ts)[converted],
            "value": good["conversion_value"].fillna(1.0)[converted],
        }
    )
    by_time = good.sort_values("event_timestamp", kind="stable")
    first_ad = by_time.drop_duplicates("ad_id")
    ads = pd.DataFrame(
        {
            "ad_id": first_ad["ad_id"],
            "campaign_id": first_ad["campaign_id"].fillna(first_ad["ad_id"]),
            "advertiser_id": first_ad["advertiser_id"].fillna(
                first_ad["campaign_id"].fillna(first_ad["ad_id"])
            ),
            "category": first_ad["category"].fillna("unknown"),
            "format": first_ad["format"].fillna("unknown"),
            "bid_type": first_ad["bid_type"].fillna("CPC"),
            "bid": first_ad["bid"],
            "created_at": first_ad["event_timestamp"],
        }
    )
    first_campaign = ads.sort_values("created_at", kind="stable").drop_duplicates("campaign_id")
    campaigns = pd.DataFrame(
        {
            "campaign_id": first_campaign["campaign_id"],
            "advertiser_id": first_campaign["advertiser_id"],
            "daily_budget": np.nan,
            "created_at": first_campaign["created_at"],
        }
    )
    first_user = by_time.drop_duplicates("user_id")
    users = pd.DataFrame(
        {
            "user_id": first_user["user_id"],
            "age_bucket": first_user["age_bucket"],
            "gender": first_user["gender"],
            "country": first_user["country"],
            "os": first_user["os"],
            "updated_at": first_user["event_timestamp"],
        }
    )
    return {
        "impressions": imp,
        "clicks": clicks,
        "conversions": conversions,
        "ads": ads,
        "campaigns": campaigns,
        "users": users,
    }
