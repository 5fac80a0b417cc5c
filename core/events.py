"""The canonical event model: one schema per table, and how tables sit on disk.

Every source (the simulator, real logs, a user's own logs) is converted into these
six tables before anything else reads it. Ids are int64 everywhere, so Feast entity
keys, Redis keys and model hashing agree whatever the source spelled them as.
Timestamps are UTC with microsecond precision (the DuckDB offline store rejects
nanosecond timestamps with a time zone).

On disk each table is Parquet under ``<data root>/events/<table>/date=YYYY-MM-DD/``,
partitioned by the UTC date of the table's time column; each source writes its own
file per partition (``<source>.parquet``), so re-ingesting a source overwrites exactly
what it wrote before. See docs/data-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.units import MICROS_PER_DAY

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    time_column: str
    key: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def required(self) -> list[str]:
        return [f.name for f in self.schema if not f.nullable]


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=nullable) for name, dtype, nullable in fields])


IMPRESSIONS = Table(
    "impressions",
    _schema(
        ("impression_id", pa.int64(), False),
        ("request_id", pa.int64(), False),
        ("event_timestamp", TIMESTAMP, False),
        ("user_id", pa.int64(), False),
        ("ad_id", pa.int64(), False),
        ("position", pa.int32(), False),
        ("placement", pa.string(), True),
        ("device", pa.string(), True),
        ("country", pa.string(), True),
        # In the ad's bid unit (per click for CPC, per conversion for CPA); null when the
        # source does not log bids.
        ("bid", pa.float64(), True),
        # Clearing price in the same unit: charged only when the billable event happens.
        ("price_paid", pa.float64(), True),
        # Probability with which the logging policy showed this ad here, when known.
        ("logging_propensity", pa.float64(), True),
    ),
    time_column="event_timestamp",
    key=("impression_id",),
)

CLICKS = Table(
    "clicks",
    _schema(("impression_id", pa.int64(), False), ("event_timestamp", TIMESTAMP, False)),
    time_column="event_timestamp",
    key=("impression_id",),
)

CONVERSIONS = Table(
    "conversions",
    _schema(
        ("impression_id", pa.int64(), False),
        ("event_timestamp", TIMESTAMP, False),
        ("value", pa.float64(), False),
    ),
    time_column="event_timestamp",
    key=("impression_id",),
)

ADS = Table(
    "ads",
    _schema(
        ("ad_id", pa.int64(), False),
        ("campaign_id", pa.int64(), False),
        ("advertiser_id", pa.int64(), False),
        ("category", pa.string(), False),
        ("format", pa.string(), False),
        ("bid_type", pa.string(), False),
        ("bid", pa.float64(), True),
        ("created_at", TIMESTAMP, False),
    ),
    time_column="created_at",
    key=("ad_id",),
)

CAMPAIGNS = Table(
    "campaigns",
    _schema(
        ("campaign_id", pa.int64(), False),
        ("advertiser_id", pa.int64(), False),
        ("daily_budget", pa.float64(), True),
        ("created_at", TIMESTAMP, False),
    ),
    time_column="created_at",
    key=("campaign_id",),
)

USERS = Table(
    "users",
    _schema(
        ("user_id", pa.int64(), False),
        ("age_bucket", pa.string(), True),
        ("gender", pa.string(), True),
        ("country", pa.string(), True),
        ("os", pa.string(), True),
        ("updated_at", TIMESTAMP, False),
    ),
    time_column="updated_at",
    key=("user_id",),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (IMPRESSIONS, CLICKS, CONVERSIONS, ADS, CAMPAIGNS, USERS)
}
BID_TYPES = ("CPC", "CPA")


def events_root(data_root: Path) -> Path:
    return data_root / "events"


def to_arrow(table: Table, frame: pd.DataFrame) -> pa.Table:
    """Cast a frame that already holds valid values to the table's exact schema."""
    return pa.Table.from_pandas(frame[table.columns], schema=table.schema, preserve_index=False)


def write_partitions(table: Table, data: pa.Table, root: Path, source: str) -> list[Path]:
    """Write ``data`` as one ``<source>.parquet`` per date partition, replacing that file.

    Partitions are the UTC date of the table's time column. Writing the same source and
    dates again replaces exactly those files, so ingest is idempotent.
    """
    if data.num_rows == 0:
        return []
    data = data.cast(table.schema)
    micros = data.column(table.time_column).cast(pa.int64()).to_numpy()
    days = micros // MICROS_PER_DAY
    order = np.argsort(days, kind="stable")
    days_sorted = days[order]
    data_sorted = data.take(pa.array(order))
    cuts = np.flatnonzero(days_sorted[1:] != days_sorted[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(days_sorted)]
    written = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        day = np.datetime64(int(days_sorted[start]), "D")
        directory = root / table.name / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{source}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(data_sorted.slice(start, end - start), tmp, coerce_timestamps="us")
        tmp.replace(path)
        written.append(path)
    return written


def read_table(table: Table, root: Path, columns: list[str] | None = None) -> pa.Table:
    """Read every partition of ``table`` under ``root`` (empty table when there is none)."""
    directory = root / table.name
    files = sorted(directory.glob("date=*/*.parquet"))
    if not files:
        return table.schema.empty_table()
    parts = [pq.read_table(f, columns=columns or table.columns, schema=table.schema) for f in files]
    return pa.concat_tables(parts)
