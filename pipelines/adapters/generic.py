"""Bring your own log: a small YAML mapping from your columns to the flat log.

Example (``docs/data-model.md`` lists every flat column)::

    source: shop_ads              # names the files this source writes
    format: csv                   # csv or parquet
    path: logs/*.csv              # glob, relative to this YAML file
    csv: {sep: ",", header: true}
    timestamp_format: "%Y-%m-%d %H:%M:%S"   # optional; ISO 8601 and epochs otherwise
    timestamp_unit: s             # optional: the time columns are epoch s / ms / us
    columns:                      # flat column: your column
      event_timestamp: ts
      user_id: visitor
      ad_id: creative
      click: clicked
    hash_ids: [user_id]           # your ids that are text: hashed to stable int64
    constants: {bid_type: CPC}    # flat columns with one value for the whole log
    context:                      # more impression fields: name -> your column, kind
      domain: {column: site, kind: categorical}
      floor_price: {column: floor, kind: numeric}

Context fields become typed impressions columns ``ctx_<name>`` (``core/context.py``) and
request-time model inputs; the scorer takes them in the request's ``context``.

Rows without an ``impression_id`` column get one from the file name (its path under the
YAML's folder when two matched files share a name, as ``a/day.csv`` and ``b/day.csv``)
and row number.

CSV files without a header take their column names from ``csv.names``. With
``header: auto`` (``names`` required) a file whose first line is exactly those names,
joined by ``sep``, is read with that line as its header and the others without: a log
cut into parts of which only the first kept the header line.

A log without times (or with times too coarse to order its rows) can be stamped in file
order instead of mapping ``event_timestamp``::

    row_time: {start: "2014-01-01T00:00:00Z", step_seconds: 0.4}

Row ``i`` (from 0, counted across the matched files in name order) is stamped
``start + i * step_seconds``, in whole microseconds. The order is then the only time
the log has: the time-based splits and features see file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from core.context import ContextField
from core.ids import hash_ids
from pipelines.adapters.flatlog import FLAT_COLUMNS, ID, TIME, synthetic_ids
from pipelines.adapters.reading import (
    RawBatch,
    read_csv,
    read_parquet,
    require_columns,
    with_row_info,
)


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sep: str = ","
    header: bool | Literal["auto"] = True
    names: list[str] | None = None

    @model_validator(mode="after")
    def auto_needs_names(self) -> CsvOptions:
        if self.header == "auto" and not self.names:
            raise ValueError("csv.header 'auto' compares each file's first line to csv.names")
        return self

    def has_header(self, file: Path) -> bool:
        if self.header != "auto":
            return self.header
        with open(file, newline="", errors="replace") as handle:
            first = handle.readline().rstrip("\r\n")
        return first.split(self.sep) == self.names


class RowTime(BaseModel):
    """Rows stamped in file order: row ``i`` at ``start + i * step_seconds``."""

    model_config = ConfigDict(extra="forbid")
    start: datetime
    step_seconds: float

    @field_validator("start")
    @classmethod
    def with_zone(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("row_time.start needs a time zone (end it with Z for UTC)")
        return value

    @field_validator("step_seconds")
    @classmethod
    def positive(cls, value: float) -> float:
        if not value > 0 or round(value * 1e6) < 1:
            raise ValueError("row_time.step_seconds must be at least one microsecond")
        return value

    def stamps(self, first_row: int, index: pd.Index) -> pd.Series:
        """The times of the rows from ``first_row`` on, one per ``index`` entry (UTC, µs)."""
        step = round(self.step_seconds * 1e6)
        start = int(pd.Timestamp(self.start).tz_convert("UTC").value // 1000)
        micros = start + step * (first_row + np.arange(len(index), dtype=np.int64))
        return pd.Series(micros.astype("datetime64[us]"), index=index).dt.tz_localize("UTC")


class ContextColumn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str
    kind: Literal["categorical", "numeric"]


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    format: Literal["csv", "parquet"] = "csv"
    path: str
    csv: CsvOptions = CsvOptions()
    timestamp_format: str | None = None
    timestamp_unit: Literal["s", "ms", "us"] | None = None
    columns: dict[str, str]
    hash_ids: list[str] = []
    constants: dict[str, str | int | float] = {}
    context: dict[str, ContextColumn] = {}
    row_time: RowTime | None = None

    @field_validator("columns", "constants")
    @classmethod
    def known_flat_columns(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(FLAT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown flat columns {unknown}; known: {sorted(FLAT_COLUMNS)}")
        return value

    @model_validator(mode="after")
    def one_time_encoding(self) -> Mapping:
        if self.timestamp_format and self.timestamp_unit:
            raise ValueError("give timestamp_format or timestamp_unit, not both")
        if self.row_time and "event_timestamp" in {*self.columns, *self.constants}:
            raise ValueError("give row_time or an event_timestamp column, not both")
        return self

    @field_validator("context")
    @classmethod
    def valid_context(cls, value: dict[str, ContextColumn]) -> dict[str, ContextColumn]:
        for name, spec in value.items():
            ContextField(name, spec.kind)  # raises on a bad name or kind
        return value

    @property
    def context_fields(self) -> tuple[ContextField, ...]:
        return tuple(ContextField(name, spec.kind) for name, spec in self.context.items())

    @field_validator("hash_ids")
    @classmethod
    def only_ids(cls, value: list[str]) -> list[str]:
        wrong = [name for name in value if FLAT_COLUMNS.get(name) != ID]
        if wrong:
            raise ValueError(f"hash_ids names columns that are not ids: {wrong}")
        return value


def load_mapping(path: Path) -> Mapping:
    try:
        return Mapping.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{path}: invalid log mapping: {error}") from error


def read(mapping_file: Path) -> Iterator[RawBatch]:
    mapping = load_mapping(mapping_file)
    files = sorted(mapping_file.parent.glob(mapping.path))
    if not files:
        raise FileNotFoundError(f"{mapping_file}: no file matches {mapping.path!r}")
    names = [file.name for file in files]
    rows_before = 0
    for file in files:
        if mapping.format == "csv":
            header = mapping.csv.has_header(file)
            raw = read_csv(file, sep=mapping.csv.sep, header=header, names=mapping.csv.names)
        else:
            raw = read_parquet(file)
        wanted = [*mapping.columns.values(), *(c.column for c in mapping.context.values())]
        require_columns(raw, wanted, file)
        flat = pd.DataFrame({flat: raw[column] for flat, column in mapping.columns.items()})
        for field in mapping.context_fields:
            flat[field.column] = raw[mapping.context[field.name].column]
        for name, value in mapping.constants.items():
            flat[name] = str(value)
        for name in mapping.hash_ids:
            flat[name] = hash_ids(flat[name])
        if mapping.timestamp_unit:
            for name in [c for c in flat.columns if FLAT_COLUMNS.get(c) == TIME]:
                flat[name] = _epoch_to_iso(flat[name], mapping.timestamp_unit)
        if mapping.row_time:
            flat["event_timestamp"] = mapping.row_time.stamps(rows_before, flat.index)
        rows_before += len(raw)
        if "impression_id" not in flat.columns:
            shared = names.count(file.name) > 1
            name = file.relative_to(mapping_file.parent).as_posix() if shared else file.name
            flat["impression_id"] = synthetic_ids(f"{mapping.source}/{name}", raw["_row"])
        yield RawBatch(
            file,
            with_row_info(flat, raw),
            raw,
            time_format=mapping.timestamp_format,
            context=mapping.context_fields,
        )


def _epoch_to_iso(values: pd.Series, unit: str) -> pd.Series:
    """Epoch numbers as ISO text; text that is not a number is kept, so parsing flags it."""
    numbers = pd.to_numeric(values, errors="coerce")
    iso = pd.to_datetime(numbers, unit=unit, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return iso.where(numbers.notna(), values)
