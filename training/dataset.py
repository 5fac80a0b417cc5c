"""Point-in-time training sets: labelled impressions joined with Feast features.

The entity rows come from :mod:`training.labels`; every feature comes from
``store.get_historical_features`` for the model's feature service, plus the request-time
features of the feature contract (the function serving calls). Nothing else adds a
column a model reads, so the manifest's input list is the service's list plus the
contract's request features and entity ids.

Splits are by time: train on the earliest rows, fit calibration and stop early on the
next ones, test on the last, so a user's behaviour in the test period never shapes a
model's weights. By default the test and calibration periods are the last whole UTC
days (a seventh of the log each, at least one); a log of fewer than three days is split
by row fractions (70/15/15) within its days; ``SplitRequest`` takes explicit boundaries
or fractions instead (``adstack dataset --calibration-from/--test-from`` or
``--split-fractions``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore

from core import context, events, units
from core.context import ContextField
from feature_repo import contract
from training.labels import LabelReport, Task, label_window, labelled_impressions

SPLITS = ("train", "calibration", "test")
DEFAULT_SERVICES = {"ctr": "ctr_v1", "cvr": "cvr_v1"}


@dataclass(frozen=True)
class ServiceFeature:
    view: str
    name: str
    dtype: str  # "int64", "float64" or "string", as in the feature contract


def service_features(service: FeatureService) -> list[ServiceFeature]:
    """The service's features in order: its views as listed, each view's features as
    declared. This is the order the manifest records and serving assembles."""
    features: list[ServiceFeature] = []
    for projection in service.feature_view_projections:
        spec = contract.ALL_VIEWS[projection.name]
        dtypes = {f.name: f.dtype for f in spec.features}
        features.extend(
            ServiceFeature(projection.name, field.name, dtypes[field.name])
            for field in projection.features
        )
    return features


DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
# A log of fewer whole days than this is split by row fractions, within days.
MIN_DAYS_FOR_DAY_SPLIT = 3
SPLIT_FLAGS = "--calibration-from/--test-from or --split-fractions"


@dataclass(frozen=True)
class Split:
    """Time boundaries: train ``[start, calibration)``, calibration ``[calibration,
    test)``, test ``[test, end)``. ``how`` says how they were chosen: ``days`` (whole
    calendar days at the end of the log, the last one possibly partial), ``fractions``
    (of the time-ordered rows) or ``explicit`` (given instants)."""

    start: datetime
    calibration: datetime
    test: datetime
    end: datetime
    how: str = "days"

    def __post_init__(self) -> None:
        if not self.start < self.calibration < self.test < self.end:
            raise ValueError(
                f"split boundaries must increase: start {self.start:%Y-%m-%d %H:%M}, "
                f"calibration {self.calibration:%Y-%m-%d %H:%M}, test "
                f"{self.test:%Y-%m-%d %H:%M}, end {self.end:%Y-%m-%d %H:%M} ({SPLIT_FLAGS})"
            )

    @classmethod
    def by_days(
        cls, start: datetime, end: datetime, calibration_days: int, test_days: int
    ) -> Split:
        """The last ``test_days`` calendar days are the test period and the
        ``calibration_days`` before them the calibration period; ``end`` need not be a
        midnight (the last test day is then partial)."""
        test = _ceil_day(end) - timedelta(days=test_days)
        calibration = test - timedelta(days=calibration_days)
        if not start < calibration:
            days = (end - start) / timedelta(days=1)
            raise ValueError(
                f"{days:.1f} days from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} cannot "
                f"hold a training day, {calibration_days} calibration and {test_days} test "
                f"days: split within days with --split-fractions, or give the boundaries "
                f"with --calibration-from and --test-from"
            )
        return cls(start, calibration, test, end, "days")

    @classmethod
    def by_fractions(
        cls,
        timestamps: pd.Series,
        start: datetime,
        end: datetime,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    ) -> Split:
        """Boundaries at the rows that cut the time-ordered ``timestamps`` into the
        ``fractions`` (train, calibration, test); rows of one instant stay together."""
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(
                f"--split-fractions takes three positive fractions summing to 1 (train, "
                f"calibration, test), not {fractions}"
            )
        micros = np.sort(units.series_micros(timestamps))
        if len(micros) < 3:
            raise ValueError(f"{len(micros)} labelled rows cannot be split three ways")
        n = len(micros)
        cuts = (micros[int(n * fractions[0])], micros[int(n * (fractions[0] + fractions[1]))])
        calibration, test = (units.micros_datetime(int(cut)) for cut in cuts)
        return cls(start, calibration, test, end, "fractions")

    def assign(self, timestamps: pd.Series) -> np.ndarray:
        micros = units.series_micros(timestamps)
        bounds = [units.instant_micros(t) for t in (self.calibration, self.test)]
        return np.asarray(SPLITS, dtype=object)[np.searchsorted(bounds, micros, side="right")]

    def as_dict(self) -> dict[str, str]:
        return {
            k: v if isinstance(v, str) else pd.Timestamp(v).isoformat()
            for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class SplitRequest:
    """How the user asked for the split (``adstack dataset``'s flags): explicit
    boundaries, fractions, or neither (the default: whole days when the log has at
    least ``MIN_DAYS_FOR_DAY_SPLIT`` of them, fractions otherwise)."""

    calibration_from: datetime | None = None
    test_from: datetime | None = None
    fractions: tuple[float, float, float] | None = None
    calibration_days: int | None = None
    test_days: int | None = None

    def __post_init__(self) -> None:
        explicit = (self.calibration_from is None, self.test_from is None)
        if explicit[0] != explicit[1]:
            raise ValueError("give both --calibration-from and --test-from, or neither")
        if self.fractions is not None and not explicit[0]:
            raise ValueError("give --split-fractions or --calibration-from/--test-from, not both")

    def resolve(self, timestamps: pd.Series, start: datetime, end: datetime) -> Split:
        if self.calibration_from is not None and self.test_from is not None:
            return Split(start, self.calibration_from, self.test_from, end, "explicit")
        if self.fractions is not None:
            return Split.by_fractions(timestamps, start, end, self.fractions)
        whole_days = (end - start) // timedelta(days=1)
        if whole_days < MIN_DAYS_FOR_DAY_SPLIT and self.calibration_days is None:
            return Split.by_fractions(timestamps, start, end)
        held_out = max(1, whole_days // 7)
        return Split.by_days(
            start, end, self.calibration_days or held_out, self.test_days or held_out
        )


@dataclass
class TrainingSet:
    frame: pd.DataFrame  # entity rows, request features, service features, labels, split
    task: Task
    service: str
    features: list[ServiceFeature]
    splits: Split
    labels: LabelReport
    # Declared context fields whose ``ctx_`` columns the frame carries (request-time).
    context: tuple[ContextField, ...] = ()
    # The log's first day: a feature at instant t was computed on [history_start, t).
    # None (sets saved before it was recorded): the train split's start.
    history_start: datetime | None = None
    # The end of the impressions the set was asked for (``[start, end)``, before label
    # windows still open at the cut-off trimmed it): the traffic after it is what the
    # model meets next. None (sets saved before it was recorded): the labels' cut-off.
    impressions_end: datetime | None = None

    @property
    def history_before_test(self) -> timedelta:
        """How much log the features had at the start of the test period: windows longer
        than this were still filling in when the model was judged (and trained)."""
        return self.splits.test - (self.history_start or self.splits.start)

    def part(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split]

    def summary(self) -> dict:
        counts = self.frame.groupby("split", observed=True).agg(
            rows=("click", "size"), clicks=("click", "sum"), conversions=("conversion", "sum")
        )
        return {
            "task": self.task,
            "feature_service": self.service,
            "features": len(self.features),
            "splits": self.splits.as_dict(),
            "rows_by_split": {
                split: {k: int(v) for k, v in row.items()} for split, row in counts.iterrows()
            },
            "labels": self.labels.as_dict(),
            "context": [{"name": f.name, "kind": f.kind} for f in self.context],
            "history_start": None if self.history_start is None else self.history_start.isoformat(),
            "impressions_end": None
            if self.impressions_end is None
            else self.impressions_end.isoformat(),
        }


def add_request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The contract's request-time features, computed from the impression's context."""
    values = contract.request_features(
        units.series_micros(frame["event_timestamp"]),
        frame["position"].to_numpy(),
        frame["placement"].to_numpy(),
        frame["device"].to_numpy(),
        frame["country"].to_numpy(),
    )
    return frame.assign(**values)


def build(
    store: FeatureStore,
    data_root: Path,
    task: Task,
    start: datetime,
    end: datetime,
    cutoff: datetime | None = None,
    service_name: str | None = None,
    split: SplitRequest | None = None,
) -> TrainingSet:
    """Label the impressions of ``[start, end)`` and join the service's features at each
    impression's instant. ``cutoff`` (default ``end``) is when the log was read: rows
    whose label window is still open then are left out and counted, nothing else."""
    service_name = service_name or DEFAULT_SERVICES[task]
    cutoff = cutoff or end
    entity_df, report = labelled_impressions(data_root, task, start, end, cutoff)
    if entity_df.empty:
        raise ValueError(
            f"no {task} rows between {start} and {end} with a label window closed by the "
            f"cut-off {cutoff} (pass --cutoff if the log was read later; report: "
            f"{report.as_dict()})"
        )
    impressions_end = min(end, cutoff)
    end = min(end, cutoff - label_window(task))
    splits = (split or SplitRequest()).resolve(entity_df["event_timestamp"], start, end)
    entity_df = add_request_features(entity_df)
    service = store.get_feature_service(service_name)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    # Feast returns the rows in its own order.
    joined = joined.sort_values(["event_timestamp", "impression_id"], kind="stable")
    joined = joined.reset_index(drop=True)
    joined["event_timestamp"] = joined["event_timestamp"].astype("datetime64[us, UTC]")
    joined["split"] = splits.assign(joined["event_timestamp"])
    empty = [name for name in SPLITS if not (joined["split"] == name).any()]
    if empty:
        raise ValueError(
            f"the {', '.join(empty)} split would be empty with {splits.as_dict()}: choose "
            f"the boundaries with {SPLIT_FLAGS}"
        )
    return TrainingSet(
        joined,
        task,
        service_name,
        service_features(service),
        splits,
        report,
        context.declared(data_root),
        log_range(data_root)[0],
        impressions_end,
    )


_LABEL_FIELDS = set(LabelReport.__dataclass_fields__)


def _ceil_day(instant: datetime) -> datetime:
    return pd.Timestamp(instant).ceil("D").to_pydatetime()


def log_range(data_root: Path) -> tuple[datetime, datetime]:
    """The first impression's UTC day and the midnight after the last impression."""
    shown = events.read_table(
        events.IMPRESSIONS, events.events_root(data_root), ["event_timestamp"]
    )
    if shown.num_rows == 0:
        raise ValueError(f"no impressions under {events.events_root(data_root)}")
    micros = shown["event_timestamp"].cast(pa.int64()).to_numpy()
    day = units.MICROS_PER_DAY
    first, last = int(micros.min()) // day * day, (int(micros.max()) // day + 1) * day
    return (
        pd.Timestamp(first, unit="us", tz="UTC").to_pydatetime(),
        pd.Timestamp(last, unit="us", tz="UTC").to_pydatetime(),
    )


def count_rows(data_root: Path, table: str) -> int:
    """Rows of a canonical event table (0 when it has none)."""
    spec = events.TABLES[table]
    return events.read_table(spec, events.events_root(data_root), [spec.time_column]).num_rows


def last_event(data_root: Path) -> datetime:
    """The latest impression, click or conversion: when a finished log was read, at the
    earliest (the default cut-off of a training set)."""
    root = events.events_root(data_root)
    latest = 0
    for table in (events.IMPRESSIONS, events.CLICKS, events.CONVERSIONS):
        times = events.read_table(table, root, [table.time_column])
        if times.num_rows:
            latest = max(latest, int(pc.max(times[table.time_column].cast(pa.int64())).as_py()))
    if not latest:
        raise ValueError(f"no events under {root}")
    return pd.Timestamp(latest, unit="us", tz="UTC").to_pydatetime()


def save(training_set: TrainingSet, directory: Path) -> Path:
    """``dataset.parquet`` (µs timestamps) and ``dataset.json`` (splits, labels, features)."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(training_set.frame, preserve_index=False)
    pq.write_table(table, directory / "dataset.parquet", coerce_timestamps="us")
    meta = training_set.summary() | {"feature_list": [asdict(f) for f in training_set.features]}
    (directory / "dataset.json").write_text(json.dumps(meta, indent=2))
    return directory


def load(directory: Path) -> TrainingSet:
    meta = json.loads((directory / "dataset.json").read_text())
    frame = pq.read_table(directory / "dataset.parquet").to_pandas()
    bounds = meta["splits"]
    start, calibration, test, end = (
        pd.Timestamp(bounds[k]).to_pydatetime() for k in ("start", "calibration", "test", "end")
    )
    splits = Split(start, calibration, test, end, bounds.get("how", "days"))
    return TrainingSet(
        frame,
        meta["task"],
        meta["feature_service"],
        [ServiceFeature(**f) for f in meta["feature_list"]],
        splits,
        # Sets saved before a field was dropped still load.
        LabelReport(**{k: v for k, v in meta["labels"].items() if k in _LABEL_FIELDS}),
        tuple(ContextField(f["name"], f["kind"]) for f in meta.get("context", [])),
        pd.Timestamp(meta["history_start"]).to_pydatetime() if meta.get("history_start") else None,
        pd.Timestamp(meta["impressions_end"]).to_pydatetime()
        if meta.get("impressions_end")
        else None,
    )
