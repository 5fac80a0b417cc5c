"""Point-in-time training sets: labelled impressions joined with Feast features.

The entity rows come from :mod:`training.labels`; every feature comes from
``store.get_historical_features`` for the model's feature service, plus the request-time
features of the feature contract (the function serving calls). Nothing else adds a
column a model reads, so the manifest's input list is the service's list plus the
contract's request features and entity ids.

Splits are by time, in whole UTC days: train on the earliest days, fit calibration and
stop early on the next ones, test on the last. The split of a row is its impression's
day, so a user's behaviour on a test day never shapes a model's weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore

from core import events, units
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


@dataclass(frozen=True)
class SplitDays:
    """Whole-day boundaries: train ``[start, calibration)``, calibration
    ``[calibration, test)``, test ``[test, end)``."""

    start: datetime
    calibration: datetime
    test: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime, calibration_days: int, test_days: int) -> SplitDays:
        days = (end - start) // timedelta(days=1)
        if days < calibration_days + test_days + 1:
            raise ValueError(
                f"{days} whole days from {start:%Y-%m-%d} to {end:%Y-%m-%d} cannot hold a "
                f"training day, {calibration_days} calibration and {test_days} test days"
            )
        test = end - timedelta(days=test_days)
        return cls(start, test - timedelta(days=calibration_days), test, end)

    def assign(self, timestamps: pd.Series) -> np.ndarray:
        micros = units.series_micros(timestamps)
        bounds = [int(pd.Timestamp(t).value // 1_000) for t in (self.calibration, self.test)]
        return np.asarray(SPLITS, dtype=object)[np.searchsorted(bounds, micros, side="right")]

    def as_dict(self) -> dict[str, str]:
        return {k: pd.Timestamp(v).isoformat() for k, v in asdict(self).items()}


@dataclass
class TrainingSet:
    frame: pd.DataFrame  # entity rows, request features, service features, labels, split
    task: Task
    service: str
    features: list[ServiceFeature]
    splits: SplitDays
    labels: LabelReport

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
    calibration_days: int = 1,
    test_days: int = 1,
) -> TrainingSet:
    """Label the impressions of ``[start, end)`` and join the service's features at each
    impression's instant. ``cutoff`` (default ``end``) is when the log was read."""
    service_name = service_name or DEFAULT_SERVICES[task]
    cutoff = cutoff or end
    entity_df, report = labelled_impressions(data_root, task, start, end, cutoff)
    # Whole days only: the set ends at the last midnight by which every label is final.
    end = min(end, _floor_day(cutoff - label_window(task)))
    splits = SplitDays.of(start, end, calibration_days, test_days)
    partial = entity_df["event_timestamp"] >= pd.Timestamp(end)
    entity_df = entity_df[~partial]
    report = replace(
        report,
        partial_day=int(partial.sum()),
        rows=len(entity_df),
        clicks=int(entity_df["click"].sum()),
        conversions=int(entity_df["conversion"].sum()),
    )
    if entity_df.empty:
        raise ValueError(
            f"no {task} rows between {start} and {end} with a closed label window "
            f"(report: {report.as_dict()})"
        )
    entity_df = add_request_features(entity_df)
    service = store.get_feature_service(service_name)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    # Feast returns the rows in its own order.
    joined = joined.sort_values(["event_timestamp", "impression_id"], kind="stable")
    joined = joined.reset_index(drop=True)
    joined["event_timestamp"] = joined["event_timestamp"].astype("datetime64[us, UTC]")
    joined["split"] = splits.assign(joined["event_timestamp"])
    return TrainingSet(joined, task, service_name, service_features(service), splits, report)


def _floor_day(instant: datetime) -> datetime:
    return pd.Timestamp(instant).floor("D").to_pydatetime()


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
    splits = SplitDays(
        *(
            pd.Timestamp(meta["splits"][k]).to_pydatetime()
            for k in ("start", "calibration", "test", "end")
        )
    )
    return TrainingSet(
        frame,
        meta["task"],
        meta["feature_service"],
        [ServiceFeature(**f) for f in meta["feature_list"]],
        splits,
        LabelReport(**meta["labels"]),
    )
