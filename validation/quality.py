"""Feature-table quality: the suites every feature view's offline table must pass, and
the training-set suite the training command gates on.

Everything is derived from the feature contract:

- each feature's bounds (counts, spend and ages non-negative, rates in [0, 1]);
- null rules: batch counts, spend and smoothed rates are never null; a raw rate may be
  null only where its denominator (same view, same window) is zero;
- clicks exceed impressions in the same window for at most 0.1% of rows, and only in
  windows of a day or more: events count at their own time, so a click just after a
  window's start may belong to an impression before it (in a 5-minute window that is
  common, so short windows are not checked);
- join keys and timestamps are present;
- per ``date=`` partition: at least one row, and for the daily views at least half the
  previous partition (a half-written day; a log's first weeks only grow); the newest
  daily partition is no older than the view's TTL at ``as_of`` (older rows would expire
  in the online store).

The rows checked are the newest partition (what the next materialisation loads); the
partition counts cover the whole table. In a training set the features of an entity the
join did not find are null, so there the null rules give way to a coverage rule: each
view must be found for at least ``MIN_COVERAGE`` of the rows from the first midnight
after the set begins (no daily window has ended before it), judged by the view's first
feature the log maps (a profile view the log maps nothing of is not checked).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import pandas as pd
import pyarrow.dataset as ds

from feature_repo import contract
from feature_repo.contract import ViewSpec
from validation.gx import Check, Runner, SuiteResult, check

MIN_PARTITION_SHARE = 0.5
MIN_COVERAGE = 0.5
CONSISTENT_SHARE = 0.999
LABELS = ("click", "conversion")


def table_path(data_root: Path, spec: ViewSpec) -> Path:
    """The offline table of a view: the batch job's table, or a streamed view's push log."""
    if spec.name in contract.VIEWS:
        return contract.table_dir(data_root, spec.name)
    push = contract.push_source_name(spec.name)
    return contract.table_dir(data_root, contract.push_log_name(push))


def bounds_expectations(features: tuple[contract.Feature, ...]) -> list[gxe.Expectation]:
    checks = []
    for f in features:
        if f.bounds is None:
            continue
        low, high = f.bounds
        checks.append(
            check(
                gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=low, max_value=high),
                "range",
                f.name,
            )
        )
    return checks


def _present_where_positive(feature: str, denominator: str, engine: str) -> gxe.Expectation:
    if engine == "spark":  # a Spark SQL expression
        return gxe.ExpectColumnValuesToNotBeNull(
            column=feature, row_condition=f"{denominator} > 0", condition_parser="spark"
        )
    return gxe.ExpectColumnValuesToNotBeNull(
        column=feature, row_condition=f"{denominator}>0", condition_parser="pandas"
    )


def null_expectations(spec: ViewSpec, engine: str) -> list[gxe.Expectation]:
    names = set(spec.feature_names)
    checks = [
        check(gxe.ExpectColumnValuesToNotBeNull(column=key), "not_null", key)
        for key in [*spec.join_keys, "event_timestamp"]
    ]
    for f in spec.features:
        denominator = contract.RATE_DENOMINATORS.get(f.measure or "")
        prefix = f.name[: -len(f"{f.measure}_{f.window}")] if f.measure else ""
        over = f"{prefix}{denominator}_{f.window}" if denominator else None
        nullable_rate = f.measure in ("ctr", "cvr", "click_share")
        if over and over in names:
            checks.append(
                check(
                    _present_where_positive(f.name, over, engine),
                    "present_with_denominator",
                    f.name,
                    denominator=over,
                )
            )
        elif f.bounds is not None and not nullable_rate and f.source is None:
            checks.append(
                check(gxe.ExpectColumnValuesToNotBeNull(column=f.name), "not_null", f.name)
            )
    return checks


def consistency_expectations(features: tuple[contract.Feature, ...]) -> list[gxe.Expectation]:
    """Clicks do not exceed impressions over the same window (daily windows or longer)."""
    by_name = {f.name for f in features}
    daily = {w.label for w in contract.BATCH_WINDOWS}
    checks = []
    for f in features:
        if f.measure != "clicks" or f.window not in daily:
            continue
        impressions = f.name[: -len(f"clicks_{f.window}")] + f"impressions_{f.window}"
        if impressions in by_name:
            checks.append(
                check(
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                        column_A=impressions, column_B=f.name, or_equal=True,
                        ignore_row_if="either_value_is_missing", mostly=CONSISTENT_SHARE,
                    ),
                    "clicks_within_impressions",
                    f.name,
                )
            )  # fmt: skip
    return checks


def view_expectations(spec: ViewSpec, engine: str = "pandas") -> list[gxe.Expectation]:
    return [
        *bounds_expectations(spec.features),
        *null_expectations(spec, engine),
        *consistency_expectations(spec.features),
    ]


def has_data(path: Path) -> bool:
    """Whether a table has a ``date=`` partition besides the empty schema seed."""
    return any(f.parent.name != contract.SCHEMA_FOLDER for f in path.glob("date=*/*.parquet"))


def partition_rows(path: Path) -> pd.DataFrame:
    """Rows per ``date=`` partition, from the Parquet footers (no data is read)."""
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    counts: dict[str, int] = {}
    for fragment in dataset.get_fragments():
        if Path(fragment.path).parent.name == contract.SCHEMA_FOLDER:  # the empty schema seed
            continue
        day = ds.get_partition_keys(fragment.partition_expression).get("date")
        counts[str(day)] = counts.get(str(day), 0) + fragment.count_rows()
    frame = pd.DataFrame({"date": list(counts), "rows": list(counts.values())})
    frame = frame.sort_values("date", ignore_index=True)
    frame["date"] = pd.to_datetime(frame["date"], utc=True)
    # The first partition has no previous one (NaN, which the check skips).
    frame["share_of_previous"] = frame["rows"] / frame["rows"].shift(1)
    return frame


def partition_expectations(spec: ViewSpec, as_of: datetime) -> list[gxe.Expectation]:
    checks = [
        check(gxe.ExpectTableRowCountToBeBetween(min_value=1), "partitions"),
        check(gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1), "rows_per_partition"),
    ]
    if spec in contract.DAILY_VIEWS:
        checks.append(
            check(
                gxe.ExpectColumnValuesToBeBetween(
                    column="share_of_previous", min_value=MIN_PARTITION_SHARE
                ),
                "partition_size",
            )
        )
        # A row for window end E is stamped E: the newest must be within the TTL.
        oldest_fresh = pd.Timestamp(as_of - spec.ttl).floor("D")
        checks.append(
            check(
                gxe.ExpectColumnMaxToBeBetween(column="date", min_value=oldest_fresh),
                "freshness",
                max_age=str(spec.ttl),
            )
        )
    return checks


@dataclass
class ViewQuality:
    view: str
    path: str
    newest_partition: str | None
    rows_checked: int
    suites: list[SuiteResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.suites)

    def as_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "path": self.path,
            "passed": self.passed,
            "newest_partition": self.newest_partition,
            "rows_checked": self.rows_checked,
            "suites": [s.as_dict() for s in self.suites],
        }


def check_view(
    runner: Runner,
    data_root: Path,
    spec: ViewSpec,
    as_of: datetime,
    engine: str = "pandas",
    spark: Any = None,
) -> ViewQuality:
    """Validate a view's offline table: its newest partition's rows and every partition's
    size; a missing table fails with one clear check."""
    path = table_path(data_root, spec)
    if not has_data(path):
        missing = SuiteResult(f"quality_{spec.name}", [])
        missing.checks.append(_missing(missing.suite, path))
        return ViewQuality(spec.name, str(path), None, 0, [missing])
    partitions = partition_rows(path)
    newest = partitions["date"].max()
    newest_dir = path / f"date={newest:%Y-%m-%d}"
    if engine == "spark":
        rows = spark.read.parquet(str(newest_dir))
        count = rows.count()
    else:
        rows = ds.dataset(newest_dir, format="parquet").to_table().to_pandas()
        count = len(rows)
    table = runner.validate(
        f"quality_{spec.name}", view_expectations(spec, engine), rows, complete=False
    )
    table.rows = count
    parts = runner.validate(
        f"quality_{spec.name}_partitions", partition_expectations(spec, as_of), partitions
    )
    parts.rows = len(partitions)
    return ViewQuality(spec.name, str(path), f"{newest:%Y-%m-%d}", count, [table, parts])


def _missing(suite: str, path: Path):
    return Check(suite, "table_exists", "table_exists", None, None, False, "absent", {},
                 error=f"no partition with rows under {path}")  # fmt: skip


def training_set_expectations(frame: pd.DataFrame, features: list[Any]) -> list[gxe.Expectation]:
    """Bounds of every feature and labels in {0, 1}."""
    by_name = {f.name: f for spec in contract.ALL_VIEWS.values() for f in spec.features}
    present = [by_name[f.name] for f in features if f.name in by_name]
    checks = bounds_expectations(tuple(present))
    checks += consistency_expectations(tuple(present))
    checks += [
        check(gxe.ExpectColumnValuesToBeInSet(column=label, value_set=[0, 1]), "label", label)
        for label in LABELS
        if label in frame.columns
    ]
    return checks


def coverage_expectations(frame: pd.DataFrame, features: list[Any]) -> list[gxe.Expectation]:
    """Each view found for most rows, judged by its first feature the log maps: a
    profile view whose every feature is null on every row reads columns the log does not
    have (no demographics mapped: no demographic check), so it is not checked."""
    profiles = {spec.name for spec in contract.PROFILE_VIEWS}
    by_view: dict[str, list[str]] = {}
    for f in features:
        by_view.setdefault(f.view, []).append(f.name)
    checks = []
    for view, names in by_view.items():
        mapped = [n for n in names if n in frame.columns and frame[n].notna().any()]
        if view in profiles and not mapped:
            continue
        name = (mapped or names)[0]
        checks.append(
            check(
                gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=MIN_COVERAGE),
                "coverage",
                name,
                view=view,
            )
        )
    return checks


def with_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows from the first UTC midnight after the set's first row: before it no daily
    window has ended, so no view can hold history for anyone."""
    first = frame["event_timestamp"].min()
    return frame[frame["event_timestamp"] >= first.floor("D") + pd.Timedelta(days=1)]


def check_training_set(runner: Runner, training_set: Any) -> SuiteResult:
    """The training gate's suite over a :class:`training.dataset.TrainingSet`."""
    frame = training_set.frame
    name = f"training_{training_set.task}"
    checks = training_set_expectations(frame, training_set.features)
    result = runner.validate(name, checks, frame)
    result.rows = len(frame)
    warm = with_history(frame)
    coverage = coverage_expectations(frame, training_set.features)
    if coverage and len(warm):
        covered = runner.validate(f"{name}_coverage", coverage, warm)
        result.checks += [replace(c, suite=name) for c in covered.checks]
    splits = set(frame["split"].unique())
    missing = [s for s in ("train", "calibration", "test") if s not in splits]
    if missing:
        result.checks.append(
            Check(
                result.suite,
                "splits",
                "splits",
                "split",
                None,
                False,
                sorted(splits),
                {"required": ["train", "calibration", "test"]},
            )  # fmt: skip
        )
    return result
