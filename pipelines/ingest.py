"""Validated ingest: any source into the canonical tables, bad rows into quarantine.

    extract (adapter reads files) -> parse (types; unparsable values are reasons)
      -> validate (Great Expectations, row by row) -> load (good rows to events/,
      bad rows with their reasons to quarantine/, a JSON summary to reports/)

No row is dropped silently: a row is either written to the events or quarantined
with every reason it failed. Good rows are always written, and the run fails (non-zero
exit in the CLI) only when the bad fraction passes the threshold, so one corrupt line
never holds back a day of good data. Re-ingesting a source first removes what that
source wrote before, so the result is the same however often it runs.

Two kinds of source: flat logs (one row per impression with labels: TalkingData,
Open Bandit, Avazu, Criteo, a user's YAML-mapped log) and canonical Parquet in the
events layout (the simulator's landing folder). Flat rows are validated as one
frame, then split into the six tables; canonical tables are validated in dependency
order, campaigns to conversions, each checked against what was accepted before it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from core import events, units
from core.context import ContextField, declare, impressions_table
from pipelines.adapters import avazu, criteo, generic, open_bandit, talkingdata
from pipelines.adapters.flatlog import (
    FLAT_COLUMNS,
    FLOAT,
    ID,
    INT,
    TEXT,
    TIME,
    fill_defaults,
    parse_flat,
    to_canonical,
)
from pipelines.adapters.reading import RawBatch, UnreadableFile, read_parquet

FLAT_SOURCES: dict[str, Callable[[Path], Iterator[RawBatch]]] = {
    "talkingdata": talkingdata.read,
    "open_bandit": open_bandit.read,
    "avazu": avazu.read,
    "criteo": criteo.read,
    "generic": generic.read,
}
CANONICAL_SOURCES = ("canonical", "simulator")
SOURCES = (*FLAT_SOURCES, *CANONICAL_SOURCES)
# Canonical tables in the order their checks depend on one another.
TABLE_ORDER = ("campaigns", "ads", "users", "impressions", "clicks", "conversions")
MALFORMED_LINE = "malformed line (wrong number of fields)"

__all__ = ["IngestReport", "UnreadableFile", "ingest", "SOURCES"]


@dataclass
class TableCounts:
    rows_in: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add_reasons(self, failures: dict[str, np.ndarray]) -> None:
        for reason, mask in failures.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(mask.sum())


@dataclass
class IngestReport:
    source: str
    name: str
    input: str
    events_root: str
    quarantine_dir: str
    max_bad_fraction: float
    tables: dict[str, TableCounts] = field(default_factory=dict)
    files_read: list[str] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(c.rows_in for c in self.tables.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(c.rows_quarantined for c in self.tables.values())

    @property
    def bad_fraction(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def passed(self) -> bool:
        return self.bad_fraction <= self.max_bad_fraction

    def counts(self, table: str) -> TableCounts:
        return self.tables.setdefault(table, TableCounts())

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "name": self.name,
            "input": self.input,
            "events_root": self.events_root,
            "quarantine_dir": self.quarantine_dir,
            "files_read": self.files_read,
            "rows_in": self.rows_in,
            "rows_quarantined": self.rows_quarantined,
            "bad_fraction": self.bad_fraction,
            "max_bad_fraction": self.max_bad_fraction,
            "passed": self.passed,
            "tables": {name: vars(counts) for name, counts in self.tables.items()},
        }


@dataclass
class AcceptedSoFar:
    """Keys accepted earlier in the run: what later batches are checked against."""

    keys: dict[str, np.ndarray] = field(default_factory=dict)
    campaigns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ads: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    impression_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    impression_micros: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    click_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    click_micros: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def seen(self, table: str, ids: pd.Series) -> np.ndarray:
        earlier = self.keys.get(table)
        in_batch = ids.duplicated(keep="first").to_numpy() & ids.notna().to_numpy()
        if earlier is None or earlier.size == 0:
            return in_batch
        return in_batch | np.isin(ids.fillna(-1).to_numpy(np.int64), earlier)

    def remember(self, table: str, ids: pd.Series) -> None:
        values = ids.dropna().to_numpy(np.int64)
        self.keys[table] = np.concatenate([self.keys.get(table, np.empty(0, np.int64)), values])


def _lookup_time(ids: np.ndarray, micros: np.ndarray, wanted: pd.Series) -> pd.Series:
    """The time recorded for each wanted id, NaT where the id is unknown."""
    order = np.argsort(ids, kind="stable")
    ids_sorted, micros_sorted = ids[order], micros[order]
    query = wanted.fillna(-1).to_numpy(np.int64)
    at = np.clip(np.searchsorted(ids_sorted, query), 0, max(ids_sorted.size - 1, 0))
    found = ids_sorted.size > 0
    hit = (ids_sorted[at] == query) if found else np.zeros(query.size, dtype=bool)
    values = np.where(hit, micros_sorted[at] if found else 0, np.iinfo(np.int64).min)
    out = pd.Series(values, index=wanted.index).astype("datetime64[us]")
    return out.dt.tz_localize("UTC").where(hit, pd.NaT)


class RowValidator(Protocol):
    """The ingest checks (``validation.ingest.IngestValidator``): per failed rule, the
    mask of ``frame``'s rows that broke it. The roof passes one in
    (``adstack.flows.ingest``), so this engine does not import the validation engine."""

    def failing_rows(self, table: str, frame: pd.DataFrame) -> dict[str, np.ndarray]: ...


class Ingestor:
    def __init__(self, report: IngestReport, data_root: Path, validator: RowValidator):
        self.report = report
        self.data_root = data_root
        self.events_root = events.events_root(data_root)
        self.quarantine_dir = Path(report.quarantine_dir)
        self.validator = validator
        self.accepted = AcceptedSoFar()
        self.batch_number = 0

    # --- load -----------------------------------------------------------------
    def start(self) -> None:
        """Forget what this source wrote before: its event files and its quarantine."""
        for old in self.events_root.glob(f"*/date=*/{self.report.name}-*.parquet"):
            old.unlink()
        shutil.rmtree(self.quarantine_dir, ignore_errors=True)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)

    def write(self, table: events.Table, good: pd.DataFrame) -> None:
        self.batch_number += 1
        data = events.to_arrow(table, good)
        name = f"{self.report.name}-{self.batch_number:05d}"
        events.write_partitions(table, data, self.events_root, name)
        self.report.counts(table.name).rows_written += data.num_rows

    def quarantine(self, table: str, raw: pd.DataFrame, bad: np.ndarray, failures: dict) -> None:
        if not bad.any():
            return
        reasons = pd.Series([""] * len(raw), index=raw.index, dtype=object)
        for reason, mask in failures.items():
            reasons[mask] = reasons[mask] + reason + "; "
        rows = raw[bad].astype("string")
        rows["_reasons"] = reasons[bad].str.rstrip("; ").astype("string")
        rows.columns = [str(c) for c in rows.columns]
        self.batch_number += 1
        rows.to_parquet(
            self.quarantine_dir / f"{table}-{self.batch_number:05d}.parquet", index=False
        )
        counts = self.report.counts(table)
        counts.rows_quarantined += int(bad.sum())
        counts.add_reasons(failures)

    # --- flat logs -------------------------------------------------------------
    def flat_batch(self, batch: RawBatch) -> dict[str, pd.DataFrame]:
        raw = batch.frame.reset_index(drop=True)
        kinds = FLAT_COLUMNS | {
            f.column: FLOAT if f.kind == "numeric" else TEXT for f in batch.context
        }
        parsed = parse_flat(raw.drop(columns=["_row", "_bad_line"]), batch.time_format, kinds)
        frame = fill_defaults(parsed.frame)
        frame["_key_seen_before"] = self.accepted.seen("impressions", frame["impression_id"])
        failures = dict(parsed.parse_failures)
        malformed = raw["_bad_line"].notna().to_numpy()
        if malformed.any():
            failures[MALFORMED_LINE] = malformed
        failures |= self.validator.failing_rows("flat_log", frame)
        bad = np.logical_or.reduce([*failures.values(), np.zeros(len(frame), dtype=bool)])
        self.report.counts("impressions").rows_in += len(frame)
        original = batch.original.reset_index(drop=True).assign(_file=str(batch.source_file))
        self.quarantine("impressions", original, bad, failures)
        good = frame[~bad]
        self.accepted.remember("impressions", good["impression_id"])
        return to_canonical(good, batch.context)

    def flat_source(self, batches: Iterator[RawBatch]) -> None:
        parts: dict[str, list[pd.DataFrame]] = {name: [] for name in events.TABLES}
        fields: tuple[ContextField, ...] = ()
        for batch in batches:
            self.report.files_read.append(str(batch.source_file))
            fields = batch.context
            for name, frame in self.flat_batch(batch).items():
                parts[name].append(frame)
        if fields:
            declare(self.data_root, fields)
        for name in TABLE_ORDER:
            frames = [f for f in parts[name] if len(f)]
            if not frames:
                continue
            table = impressions_table(fields) if name == "impressions" else events.TABLES[name]
            frame = pd.concat(frames, ignore_index=True)
            if name in ("ads", "campaigns", "users"):
                # Several files may know the same id: keep its first appearance.
                frame = frame.sort_values(table.time_column, kind="stable").drop_duplicates(
                    list(table.key)
                )
            self.write(table, frame)

    # --- canonical tables ------------------------------------------------------
    def canonical_table(self, table: events.Table, raw: pd.DataFrame, source_file: Path) -> None:
        raw = raw.reset_index(drop=True)
        kinds = {f.name: _kind(f.type) for f in table.schema}
        parsed = parse_flat(raw[[c for c in raw.columns if c in kinds]], kinds=kinds)
        frame = parsed.frame
        failures = dict(parsed.parse_failures)
        failures |= {
            f"missing column {c}": np.ones(len(frame), dtype=bool)
            for c in table.required()
            if c not in raw.columns
        }
        self._derive(table, frame)
        failures |= self.validator.failing_rows(table.name, frame)
        bad = np.logical_or.reduce([*failures.values(), np.zeros(len(frame), dtype=bool)])
        self.report.counts(table.name).rows_in += len(frame)
        self.quarantine(table.name, raw.assign(_file=str(source_file)), bad, failures)
        good = frame[~bad]
        self._accept(table, good)
        if len(good):
            self.write(table, good)

    def _derive(self, table: events.Table, frame: pd.DataFrame) -> None:
        key = frame[table.key[0]]
        frame["_key_seen_before"] = self.accepted.seen(table.name, key)
        acc = self.accepted
        if table is events.ADS:
            frame["_campaign_unknown"] = ~frame["campaign_id"].isin(acc.campaigns).to_numpy()
        elif table is events.IMPRESSIONS:
            frame["_ad_unknown"] = ~frame["ad_id"].isin(acc.ads).to_numpy()
        elif table is events.CLICKS:
            shown = _lookup_time(acc.impression_ids, acc.impression_micros, key)
            frame["_impression_timestamp"] = shown
            frame["_impression_unknown"] = shown.isna().to_numpy()
        elif table is events.CONVERSIONS:
            clicked = _lookup_time(acc.click_ids, acc.click_micros, key)
            frame["_click_timestamp"] = clicked
            frame["_click_unknown"] = clicked.isna().to_numpy()

    def _accept(self, table: events.Table, good: pd.DataFrame) -> None:
        acc = self.accepted
        key = good[table.key[0]]
        acc.remember(table.name, key)
        if table is events.CAMPAIGNS:
            acc.campaigns = np.concatenate([acc.campaigns, key.to_numpy(np.int64)])
        elif table is events.ADS:
            acc.ads = np.concatenate([acc.ads, key.to_numpy(np.int64)])
        elif table is events.IMPRESSIONS:
            acc.impression_ids = np.concatenate([acc.impression_ids, key.to_numpy(np.int64)])
            acc.impression_micros = np.concatenate(
                [acc.impression_micros, units.series_micros(good["event_timestamp"])]
            )
        elif table is events.CLICKS:
            acc.click_ids = np.concatenate([acc.click_ids, key.to_numpy(np.int64)])
            acc.click_micros = np.concatenate(
                [acc.click_micros, units.series_micros(good["event_timestamp"])]
            )

    def canonical_source(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder of canonical tables")
        for name in TABLE_ORDER:
            table = events.TABLES[name]
            files = sorted((root / name).glob("date=*/*.parquet"))
            # Catalogs and the small label tables are validated whole; impressions by file.
            groups = [[f] for f in files] if name == "impressions" else [files]
            for group in groups:
                if not group:
                    continue
                self.report.files_read += [str(f) for f in group]
                raw = pd.concat([read_parquet(f) for f in group], ignore_index=True)
                self.canonical_table(
                    table, raw.drop(columns=["_row", "_bad_line"]), group[0].parent
                )


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return TIME
    if pa.types.is_floating(dtype):
        return FLOAT
    if pa.types.is_int32(dtype):
        return INT
    if pa.types.is_integer(dtype):
        return ID
    return TEXT


def ingest(
    source: str,
    path: Path,
    data_root: Path,
    reports_dir: Path,
    *,
    validator: RowValidator,
    name: str | None = None,
    max_bad_fraction: float = 0.01,
) -> IngestReport:
    """Ingest ``path`` as ``source``, rows checked by ``validator``; returns the report
    (also written as JSON)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    name = name or (generic.load_mapping(path).source if source == "generic" else source)
    report = IngestReport(
        source=source,
        name=name,
        input=str(path),
        events_root=str(events.events_root(data_root)),
        quarantine_dir=str(data_root / "quarantine" / name),
        max_bad_fraction=max_bad_fraction,
    )
    ingestor = Ingestor(report, data_root, validator)
    ingestor.start()
    if source in CANONICAL_SOURCES:
        ingestor.canonical_source(path)
    else:
        ingestor.flat_source(FLAT_SOURCES[source](path))
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"{name}.json").write_text(json.dumps(report.to_json(), indent=2))
    return report
