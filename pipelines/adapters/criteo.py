"""Criteo display ads: a click label, 13 integer and 26 hashed categorical features.

The sample has no timestamps, no user and no named ad fields. Synthesised: row ``i``
of a file is stamped ``anchor + i * (1 day / rows)`` (anchor 2014-01-01 UTC by
default), keeping file order; the impression id is a hash of the file and row; each
row is its own user (the log has no user id); categorical ``C3`` stands in for the ad
and ``C1`` for its campaign and advertiser (an empty categorical is a value of its
own). The other 37 features have no place in the canonical model and are not kept.
A click is stamped at its impression time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.ids import hash_ids
from pipelines.adapters.flatlog import synthetic_ids
from pipelines.adapters.reading import RawBatch, read_csv, with_row_info

COLUMNS = ["label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]]
ANCHOR = datetime(2014, 1, 1, tzinfo=UTC)


def files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.csv"))


def read(path: Path, anchor: datetime = ANCHOR) -> Iterator[RawBatch]:
    for file in files(path):
        raw = read_csv(file, sep="\t", header=False, names=COLUMNS)
        step = pd.Timedelta(days=1) / max(len(raw), 1)
        impression_id = synthetic_ids(f"criteo/{file.name}", raw["_row"])
        flat = pd.DataFrame(
            {
                "impression_id": impression_id,
                "event_timestamp": pd.Timestamp(anchor) + step * (raw["_row"] - 1),
                "user_id": impression_id,
                "ad_id": hash_ids(raw["C3"].fillna("")),
                "campaign_id": hash_ids(raw["C1"].fillna("")),
                "advertiser_id": hash_ids(raw["C1"].fillna("")),
                "position": "1",
                "bid_type": "CPC",
                "click": raw["label"],
            }
        )
        yield RawBatch(file, with_row_info(flat, raw), raw)
