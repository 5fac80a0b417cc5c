"""Avazu mobile ad CTR: one row per impression with its click label.

``id`` (an unsigned 64-bit number) keeps its low 63 bits as the impression id. The
user is ``device_id``, or ``device_ip`` plus ``device_model`` when ``device_id`` is the
anonymous placeholder ``a99f214a`` (the usual user proxy for this data). ``C14`` is
the ad, ``C17`` its campaign and advertiser; the placement is the site, or the app
when the site is the placeholder ``85f751fd``; ``device_type`` is the device;
``banner_pos + 1`` the position; ``C15 x C16`` the format (banner size).

Synthesised: the log gives the hour only (``hour = YYMMDDHH``), so rows of one hour are
spread evenly over it in file order; a click is stamped at its impression time. The
``dev`` and ``test`` files have no header and take the train file's 24 columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from core.ids import ID_MASK, hash_ids
from pipelines.adapters.reading import RawBatch, read_csv, require_columns, with_row_info

COLUMNS = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
ANONYMOUS_DEVICE = "a99f214a"
NO_SITE = "85f751fd"


def files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.csv"))


def _has_header(file: Path) -> bool:
    with open(file) as handle:
        return handle.readline().startswith("id,")


def read(path: Path) -> Iterator[RawBatch]:
    for file in files(path):
        raw = read_csv(file, header=_has_header(file), names=None if _has_header(file) else COLUMNS)
        require_columns(raw, COLUMNS, file)
        hour = pd.to_datetime(raw["hour"], format="%y%m%d%H", errors="coerce", utc=True)
        within_hour = hour.groupby(hour).cumcount()
        per_hour = hour.map(hour.value_counts())
        offset = pd.to_timedelta((within_hour / per_hour * 3600.0).fillna(0), unit="s")
        anonymous = raw["device_id"] == ANONYMOUS_DEVICE
        user_key = raw["device_id"].where(~anonymous, raw["device_ip"] + "|" + raw["device_model"])
        no_site = raw["site_id"] == NO_SITE
        flat = pd.DataFrame(
            {
                "impression_id": _low_63_bits(raw["id"]),
                "event_timestamp": (hour + offset).astype("datetime64[us, UTC]"),
                "user_id": hash_ids(user_key),
                "ad_id": raw["C14"],
                "campaign_id": raw["C17"],
                "advertiser_id": raw["C17"],
                "placement": ("site:" + raw["site_id"]).where(~no_site, "app:" + raw["app_id"]),
                "device": "type_" + raw["device_type"],
                "position": pd.to_numeric(raw["banner_pos"], errors="coerce") + 1,
                "format": raw["C15"] + "x" + raw["C16"],
                "category": raw["site_category"].where(~no_site, raw["app_category"]),
                "bid_type": "CPC",
                "click": raw["click"],
            }
        )
        flat.loc[hour.isna(), "event_timestamp"] = pd.NaT
        yield RawBatch(file, with_row_info(flat, raw), raw)


def _low_63_bits(ids: pd.Series) -> pd.Series:
    def parse(text: object) -> object:
        try:
            return int(str(text)) & ID_MASK
        except ValueError:
            return pd.NA

    return (
        ids.map(parse, na_action="ignore")
        .astype("Int64")
        .astype("string")
        .fillna(ids.astype("string"))
    )
