"""Spark batch job: daily windowed aggregates for the Feast feature views.

Run it as ``spark-submit pipelines/batch_features.py --start 2026-01-06 --end
2026-01-12`` (add ``--master spark://...`` or submit to a cluster: there are no Python
UDFs, so executors run no Python) or as ``adstack batch``.

``--start`` and ``--end`` are window-end dates, both included. The row for window end
``E`` (UTC midnight) is stamped ``event_timestamp = E`` and counts only events strictly
before ``E``; see ``feature_repo/contract.py`` for the clocks that decide which clicks
and conversions count.

How windows are computed without rescanning history for every day:

1. every impression, attributed click and attributed conversion becomes one row of
   counts at its own timestamp (:func:`attributed_events`);
2. rows are summed once per entity and UTC day (:func:`daily_partials`);
3. each entity gets a dense grid of window ends from its first active day to one day
   past the longest window after its last, and each window is a running sum over the
   last ``n`` grid rows (:func:`roll_windows`). The first all-zero row after activity
   stops is kept, so online values fall to zero instead of staying stale; later empty
   rows are dropped.

Distinct ads seen cannot be summed over days; each (user, ad, day) occurrence adds one
from the next day until the window passes it or the pair is seen again, and a running
sum of those steps gives the exact distinct count (:func:`distinct_steps`).

Output: Parquet under ``<data root>/features/<view>/date=YYYY-MM-DD`` (the window end's
date), microsecond timestamps. A run replaces exactly the date partitions of its range.
"""

from __future__ import annotations

import argparse
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import reduce
from pathlib import Path

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import events, units
from core.settings import get_settings
from core.spark import money_micros, spark_job
from feature_repo import contract
from feature_repo.contract import BATCH_WINDOWS, LONGEST_BATCH_WINDOW, ViewSpec
from feature_repo.contract import Window as Span

COUNTS = ("impressions", "clicks", "conversions")
# The measures each daily view sums; activity in them keeps an entity's rows.
ACTIVE_MEASURES = {g.name: g.sums for g in contract.GROUP_BYS}
# Declared context fields some group-by keys on (``ctx_<name>`` impression columns).
CONTEXT_KEYS = tuple(
    dict.fromkeys(k for g in contract.GROUP_BYS for k in g.keys if k.startswith("ctx_"))
)
EPOCH = date(1970, 1, 1)


def _day_index(day: date) -> int:
    return (day - EPOCH).days


# ---------------------------------------------------------------- extract


@dataclass(frozen=True)
class Events:
    impressions: DataFrame  # impression_id, event_timestamp, user_id, ad_id, price_paid
    clicks: DataFrame  # impression_id, event_timestamp
    conversions: DataFrame  # impression_id, event_timestamp
    ads: DataFrame  # ad_id, campaign_id, advertiser_id, category, format, bid_type, bid, created_at
    users: DataFrame  # user_id, age_bucket, gender, country, os, updated_at
    campaigns: DataFrame  # campaign_id, advertiser_id, daily_budget, created_at
    first_seen: DataFrame  # every impression before the range ends (for first-seen ages)


def history_start(first_end: date) -> date:
    """The first event day a run over ``first_end..`` must read.

    The longest window plus one day (the row after activity stops), plus the click and
    attribution clocks so that a click or conversion in range finds its impression.
    """
    clocks = contract.CLICK_WINDOW + contract.ATTRIBUTION_WINDOW
    return first_end - timedelta(
        days=LONGEST_BATCH_WINDOW.days + 1 + math.ceil(clocks / timedelta(days=1))
    )


SPARK_TYPES = {"int64": "bigint", "int32": "int", "string": "string", "double": "double"}


def _read(spark: SparkSession, root: Path, table: str) -> DataFrame:
    path = root / table
    if not any(path.glob("date=*/*.parquet")):
        # A source may log no events of a kind (Open Bandit has no conversions): read
        # that table as empty rather than failing on a missing folder.
        columns = [
            f"`{field.name}` {SPARK_TYPES.get(str(field.type), 'timestamp')}"
            for field in events.TABLES[table].schema
        ]
        return spark.createDataFrame([], ", ".join([*columns, "`date` date"]))
    # Sources that declare different context fields write different impression columns.
    return spark.read.option("basePath", str(path)).option("mergeSchema", "true").parquet(str(path))


def extract(spark: SparkSession, events_root: Path, first_end: date, last_end: date) -> Events:
    lo, hi = F.lit(history_start(first_end)), F.lit(last_end)
    impressions = _read(spark, events_root, "impressions")
    missing = [c for c in CONTEXT_KEYS if c not in impressions.columns]
    if missing:
        raise ValueError(
            f"group_bys.yaml keys on {missing}, which no source under {events_root} "
            "declares (a mapping's `context` section declares them)"
        )
    in_range = (F.col("date") >= lo) & (F.col("date") < hi)
    return Events(
        impressions=impressions.where(in_range).select(
            "impression_id", "event_timestamp", "user_id", "ad_id", "price_paid", *CONTEXT_KEYS
        ),
        clicks=_read(spark, events_root, "clicks")
        .where(in_range)
        .select("impression_id", "event_timestamp"),
        conversions=_read(spark, events_root, "conversions")
        .where(in_range)
        .select("impression_id", "event_timestamp"),
        ads=_read(spark, events_root, "ads").drop("date"),
        users=_read(spark, events_root, "users").drop("date"),
        campaigns=_read(spark, events_root, "campaigns").drop("date"),
        first_seen=impressions.where(F.col("date") < hi),
    )


# ---------------------------------------------------------------- transform


def attributed_events(
    impressions: DataFrame, clicks: DataFrame, conversions: DataFrame, ads: DataFrame
) -> DataFrame:
    """One row per impression, attributed click and attributed conversion.

    Columns: event_timestamp (the event's own time), user_id, ad_id, campaign_id,
    advertiser_id, category, impressions, clicks, conversions (0 or 1) and spend (the
    clearing price, billed at the click for CPC ads and at the conversion for CPA ads, in
    whole micros: ``core.units``).
    """
    shown = impressions.join(
        F.broadcast(ads.select("ad_id", "campaign_id", "advertiser_id", "category", "bid_type")),
        "ad_id",
    ).select(
        "impression_id",
        F.col("event_timestamp").alias("shown_at"),
        "user_id",
        "ad_id",
        "campaign_id",
        "advertiser_id",
        "category",
        "bid_type",
        F.coalesce("price_paid", F.lit(0.0)).alias("price"),
        *CONTEXT_KEYS,
    )
    clicked = (
        clicks.withColumnRenamed("event_timestamp", "clicked_at")
        .join(shown, "impression_id")
        .where(_within("shown_at", "clicked_at", contract.CLICK_WINDOW))
    )
    converted = (
        conversions.withColumnRenamed("event_timestamp", "converted_at")
        .join(clicked.select("impression_id", "clicked_at"), "impression_id")
        .join(shown.drop("shown_at"), "impression_id")
        .where(_within("clicked_at", "converted_at", contract.ATTRIBUTION_WINDOW))
    )
    keys = ["user_id", "ad_id", "campaign_id", "advertiser_id", "category", *CONTEXT_KEYS]

    def rows(frame: DataFrame, at: str, kind: str, billed_as: str | None) -> DataFrame:
        billed = F.col("bid_type") == F.lit(billed_as) if billed_as else F.lit(False)
        return frame.select(
            F.col(at).alias("event_timestamp"),
            *keys,
            *(F.lit(int(kind == c)).cast("long").alias(c) for c in COUNTS),
            F.when(billed, money_micros(F.col("price"))).otherwise(0).cast("long").alias("spend"),
        )

    return (
        rows(shown, "shown_at", "impressions", units.billed_bid_type("impression"))
        .unionByName(rows(clicked, "clicked_at", "clicks", units.billed_bid_type("click")))
        .unionByName(
            rows(converted, "converted_at", "conversions", units.billed_bid_type("conversion"))
        )
    )


def _within(start: str, end: str, span: timedelta) -> Column:
    gap = F.unix_micros(F.col(end)) - F.unix_micros(F.col(start))
    return (gap >= 0) & (gap <= units.span_micros(span))


def daily_partials(events: DataFrame, keys: Sequence[str], measures: Sequence[str]) -> DataFrame:
    """Sum ``measures`` per entity and UTC day (``day`` = days since 1970-01-01)."""
    return (
        events.withColumn("day", F.unix_date(F.to_date("event_timestamp")))
        .groupBy(*keys, "day")
        .agg(*(F.sum(m).alias(m) for m in measures))
    )


def roll_windows(
    partials: DataFrame,
    keys: Sequence[str],
    measures: Sequence[str],
    first_end: date,
    last_end: date,
    windows: Sequence[Span] = BATCH_WINDOWS,
    steps: DataFrame | None = None,
) -> DataFrame:
    """Window sums at every daily window end in ``[first_end, last_end]``.

    ``partials`` has ``keys``, ``day`` and ``measures``. Returns ``keys``, ``end_day``
    and ``<measure>_<window>`` for every measure and window; ``steps`` (``keys``,
    ``end_day`` and step columns) are added up cumulatively along the same grid.
    Partials must cover at least ``[first_end - longest - 1 day, last_end)``.
    """
    longest = max(w.days for w in windows)
    bounds = partials.groupBy(*keys).agg(F.min("day").alias("lo"), F.max("day").alias("hi"))
    grid = bounds.select(
        *keys,
        F.explode(
            F.sequence(
                F.col("lo") + 1, F.least(F.col("hi") + longest + 1, F.lit(_day_index(last_end)))
            )
        ).alias("end_day"),
    )
    by_end = partials.withColumn("end_day", F.col("day") + 1).drop("day")
    frame = grid.join(by_end, [*keys, "end_day"], "left").fillna(0, list(measures))
    step_columns: list[str] = []
    if steps is not None:
        step_columns = [c for c in steps.columns if c not in (*keys, "end_day")]
        frame = frame.join(steps, [*keys, "end_day"], "left").fillna(0, step_columns)
    # Running totals along the dense grid, then each window as a difference of two
    # totals `n` rows apart: O(1) per row, where a sliding frame re-adds its whole frame
    # for every row.
    order = Window.partitionBy(*keys).orderBy("end_day")
    running = order.rowsBetween(Window.unboundedPreceding, 0)
    activity = sum((F.col(m) for m in measures), F.lit(0))
    totals = frame.select(
        *keys,
        "end_day",
        *(F.sum(m).over(running).alias(f"_total_{m}") for m in measures),
        F.sum(activity).over(running).alias("_total_activity"),
        *(F.sum(c).over(running).alias(c) for c in step_columns),
    )

    def last(column: str, rows: int) -> Column:
        return F.col(column) - F.coalesce(F.lag(column, rows).over(order), F.lit(0))

    sums = [last(f"_total_{m}", w.days).alias(f"{m}_{w.label}") for w in windows for m in measures]
    # Rows with nothing in the longest window plus one day are dropped: that keeps one
    # all-zero row right after activity stops.
    recent = last("_total_activity", longest + 1).alias("_recent")
    return (
        totals.select(*keys, "end_day", *sums, *step_columns, recent)
        .where(
            (F.col("_recent") > 0)
            & F.col("end_day").between(_day_index(first_end), _day_index(last_end))
        )
        .drop("_recent")
    )


def entity_windows(
    events: DataFrame,
    keys: Sequence[str],
    measures: Sequence[str],
    first_end: date,
    last_end: date,
    steps: DataFrame | None = None,
) -> DataFrame:
    """Daily partials of ``measures`` per ``keys``, rolled over the batch windows."""
    partials = daily_partials(events, keys, measures)
    return roll_windows(partials, keys, measures, first_end, last_end, BATCH_WINDOWS, steps)


def distinct_steps(
    events: DataFrame,
    keys: Sequence[str] = ("user_id",),
    column: str = "ad_id",
    measure: str = "distinct_ads",
    windows: Sequence[Span] = BATCH_WINDOWS,
) -> DataFrame:
    """Steps whose running sum along window ends is the key's distinct ``column`` values
    per window (a user's distinct ads).

    An occurrence of (key, value) on day ``d`` counts for window ends ``d + 1`` up to
    ``d + n`` (window of ``n`` days) or the pair's next occurrence, whichever is first:
    +1 at the first end, -1 after the last. Columns: ``keys``, end_day,
    ``<measure>_<window>``.
    """
    keys = list(keys)
    pairs = (
        events.where(F.col("impressions") > 0)
        .select(*keys, column, F.unix_date(F.to_date("event_timestamp")).alias("day"))
        .distinct()
        .withColumn(
            "next_day", F.lead("day").over(Window.partitionBy(*keys, column).orderBy("day"))
        )
    )
    columns = [f"{measure}_{w.label}" for w in windows]
    starts = pairs.select(
        *keys, (F.col("day") + 1).alias("end_day"), *(F.lit(1).alias(c) for c in columns)
    )
    stops = [
        pairs.select(
            *keys,
            (
                F.least(F.col("day") + w.days, F.coalesce("next_day", F.col("day") + w.days)) + 1
            ).alias("end_day"),
            *(F.lit(-1 if c == column else 0).alias(c) for c in columns),
        )
        for w, column in zip(windows, columns, strict=True)
    ]
    steps = starts
    for stop in stops:
        steps = steps.unionByName(stop)
    return steps.groupBy(*keys, "end_day").agg(*(F.sum(c).alias(c) for c in columns))


def rate_column(numerator: Column, denominator: Column) -> Column:
    """Raw rate, capped at 1; null when there is no denominator (unknown, not zero).

    Events count at their own time, so a window can hold a click whose impression fell
    just before it (or a conversion whose click did): the cap keeps rates in [0, 1].
    """
    return capped(F.when(denominator > 0, numerator / denominator))


def smoothed_rate(numerator: Column, denominator: Column, prior: Column, strength: float) -> Column:
    """Posterior mean under a Beta prior of mean ``prior`` and weight ``strength``.

    Falls back to the raw rate when the prior is unknown. Capped at 1, like :func:`rate`.
    """
    posterior = (numerator + prior * strength) / (denominator + strength)
    return capped(F.coalesce(posterior, rate_column(numerator, denominator)))


def capped(value: Column) -> Column:
    """``min(value, 1)`` that keeps nulls null (``least`` would turn them into 1)."""
    return F.when(value > 1.0, F.lit(1.0)).otherwise(value)


def _stamped(frame: DataFrame, spec: ViewSpec, columns: dict[str, Column]) -> DataFrame:
    """Select the view's columns in contract order, stamped at the window end."""
    stamp = F.timestamp_seconds(F.col("end_day").cast("long") * 86_400)
    return frame.select(
        *spec.join_keys,
        stamp.alias("event_timestamp"),
        *(columns[name].alias(name) for name in spec.feature_names),
    )


def profile(catalog: DataFrame, spec: ViewSpec, stamped_by: str) -> DataFrame:
    """A catalog snapshot as a profile view: each feature copied from its source column."""
    return catalog.select(
        *spec.join_keys,
        F.col(stamped_by).alias("event_timestamp"),
        *(F.col(f.source).alias(f.name) for f in spec.features if f.source is not None),
    )


class GroupByJob:
    """The daily tables of the declared group-bys (``contract.GROUP_BYS``), built from
    one frame of attributed events. Rolled sums, prior rates and parent groups are
    computed once and shared between the group-bys that read them."""

    def __init__(
        self, activity: DataFrame, first_seen: DataFrame, first_end: date, last_end: date
    ) -> None:
        self.activity, self.first_seen = activity, first_seen
        self.first_end, self.last_end = first_end, last_end
        self.rolled: dict[str, DataFrame] = {}  # by group-by name
        self.priors: dict[tuple[str, ...], DataFrame] = {}  # by prior keys
        self.kept: list[DataFrame] = []

    def _keep(self, frame: DataFrame) -> DataFrame:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.kept.append(frame)
        return frame

    def rolled_sums(self, group: contract.GroupBy) -> DataFrame:
        """``keys``, end_day and ``<measure>_<window>`` of the group's sums (and its
        distinct counts)."""
        if group.name not in self.rolled:
            known = self._known(group.keys)
            steps = None
            for a in group.aggregations:
                if isinstance(a, contract.Distinct):
                    more = distinct_steps(known, group.keys, a.column, a.measure)
                    on = [*group.keys, "end_day"]
                    steps = more if steps is None else steps.join(more, on, "full")
            frame = entity_windows(
                known, list(group.keys), group.sums, self.first_end, self.last_end, steps
            )
            self.rolled[group.name] = self._keep(frame) if self._is_parent(group) else frame
        return self.rolled[group.name]

    def _known(self, keys: Sequence[str]) -> DataFrame:
        """The events with a value for every key: an impression without one (a context
        field it lacks) has no entity in the group."""
        return self.activity.where(~reduce(operator.or_, [F.col(k).isNull() for k in keys]))

    def _is_parent(self, group: contract.GroupBy) -> bool:
        return any(
            isinstance(a, contract.Share) and a.of == group.keys
            for other in contract.GROUP_BYS
            for a in other.aggregations
        )

    def prior(self, keys: tuple[str, ...]) -> DataFrame:
        """Per ``keys`` and window end: the group's raw rate of every rate measure a
        group-by smooths towards it (``prior_<measure>_<window>``)."""
        if keys not in self.priors:
            rates = {
                a.measure: a
                for g in contract.GROUP_BYS
                for a in g.aggregations
                if isinstance(a, contract.Rate) and a.prior == keys
            }
            measures = tuple(
                dict.fromkeys(m for r in rates.values() for m in (r.numerator, r.denominator))
            )
            rolled = entity_windows(
                self._known(keys), list(keys), measures, self.first_end, self.last_end
            )
            self.priors[keys] = self._keep(
                rolled.select(
                    *keys,
                    "end_day",
                    *(
                        rate_of(r, w).alias(f"prior_{r.measure}_{w.label}")
                        for r in rates.values()
                        for w in BATCH_WINDOWS
                    ),
                )
            )
        return self.priors[keys]

    def table(self, group: contract.GroupBy) -> DataFrame:
        """The group-by's view: every aggregation over every window, stamped."""
        frame = self.rolled_sums(group)
        columns: dict[str, Column] = {}
        priors = dict.fromkeys(
            a.prior for a in group.aggregations if isinstance(a, contract.Rate) and a.prior
        )
        for keys in priors:
            if not set(keys) <= set(group.keys):
                # The key decides the prior's key (an ad has one category).
                mapping = self.activity.select(*group.keys, *keys).distinct()
                frame = frame.join(mapping, list(group.keys), "left")
            frame = frame.join(self.prior(keys), [*keys, "end_day"], "left")
        for of in dict.fromkeys(a.of for a in group.aggregations if isinstance(a, contract.Share)):
            parent = next(g for g in contract.GROUP_BYS if g.keys == of)
            numerators = {a.numerator for a in group.aggregations if isinstance(a, contract.Share)}
            totals = self.rolled_sums(parent).select(
                *of,
                "end_day",
                *(
                    F.col(f"{n}_{w.label}").alias(f"_of_{n}_{w.label}")
                    for n in sorted(numerators)
                    for w in group.windows
                ),
            )
            frame = frame.join(totals, [*of, "end_day"], "left")
        for w in group.windows:
            for a in group.aggregations:
                name = contract.feature_name(group.prefix, a.measure, w)
                columns[name] = aggregate(a, w)
        if group.age is not None:
            first = self.first_seen.groupBy(*group.keys).agg(
                F.min("event_timestamp").alias("first_impression_at")
            )
            frame = frame.join(first, list(group.keys), "left")
            end_micros = F.col("end_day").cast("long") * units.MICROS_PER_DAY
            age = (end_micros - F.unix_micros("first_impression_at")) / units.MICROS_PER_DAY
            columns[group.age.name] = F.when(age > 0, age)
        return _stamped(frame, group.view, columns)


def rate_of(rate: contract.Rate, window: Span) -> Column:
    return rate_column(
        F.col(f"{rate.numerator}_{window.label}"), F.col(f"{rate.denominator}_{window.label}")
    )


def aggregate(a: contract.Aggregation, w: Span) -> Column:
    """One aggregation over window ``w`` from the rolled, joined columns."""
    if isinstance(a, contract.Sum):
        column = F.col(f"{a.measure}_{w.label}")
        return column / units.MONEY_MICROS if a.measure == "spend" else column
    if isinstance(a, contract.Distinct):
        return F.col(f"{a.measure}_{w.label}")
    if isinstance(a, contract.Share):
        return rate_column(F.col(f"{a.numerator}_{w.label}"), F.col(f"_of_{a.numerator}_{w.label}"))
    if a.prior:
        return smoothed_rate(
            F.col(f"{a.numerator}_{w.label}"),
            F.col(f"{a.denominator}_{w.label}"),
            F.col(f"prior_{a.measure}_{w.label}"),
            a.strength,
        )
    return rate_of(a, w)


@dataclass(frozen=True)
class FeatureTables:
    tables: dict[str, DataFrame]  # by view name
    activity: DataFrame  # the attributed events every daily table is built from
    kept: list[DataFrame]  # held in memory for the tables; unpersist once they are written


def transform(events: Events, first_end: date, last_end: date) -> FeatureTables:
    """Every feature table of the range, keyed by view name."""
    # Every table starts from the same attributed events: keep them rather than rejoin
    # the raw events for each.
    activity = attributed_events(
        events.impressions, events.clicks, events.conversions, events.ads
    ).persist(StorageLevel.MEMORY_AND_DISK)
    job = GroupByJob(activity, events.first_seen, first_end, last_end)
    tables = {group.name: job.table(group) for group in contract.GROUP_BYS}
    tables |= {
        contract.AD_PROFILE.name: profile(events.ads, contract.AD_PROFILE, "created_at"),
        contract.USER_PROFILE.name: profile(events.users, contract.USER_PROFILE, "updated_at"),
        contract.CAMPAIGN_PROFILE.name: profile(
            events.campaigns, contract.CAMPAIGN_PROFILE, "created_at"
        ),
    }
    return FeatureTables(tables, activity, [activity, *job.kept])


def ends_with_rows(
    active_days: dict[int, dict[str, int]], measures: Sequence[str], first_end: date, last_end: date
) -> set[str]:
    """Window-end dates of the range on which a daily view has rows: those with some
    activity in the longest window plus one day before them."""
    reach = LONGEST_BATCH_WINDOW.days + 1
    lo, hi = _day_index(first_end), _day_index(last_end)
    ends = {
        end
        for day, totals in active_days.items()
        if any(totals[m] for m in measures)
        for end in range(max(day + 1, lo), min(day + reach, hi) + 1)
    }
    return {str(EPOCH + timedelta(days=end)) for end in ends}


# ---------------------------------------------------------------- load


def load(
    spark: SparkSession,
    frame: DataFrame,
    directory: Path,
    keys: Sequence[str],
    dates: tuple[date, date] | None = None,
    dates_with_rows: set[str] | None = None,
) -> int:
    """Write ``frame`` partitioned by the date of ``event_timestamp``; return its rows.

    Dynamic partition overwrite replaces the partitions the frame has rows for. For a
    daily table (``dates`` = its range), partitions of the range without rows are
    removed too, so a rerun leaves exactly what this run computed. Rows are counted
    from the written files' footers rather than by caching the table.
    """
    (
        frame.withColumn("date", F.date_format("event_timestamp", "yyyy-MM-dd"))
        .repartition("date")
        .sortWithinPartitions(*keys)
        .write.mode("overwrite")
        .partitionBy("date")
        .parquet(str(directory))
    )
    if dates is None:
        return _rows(spark, directory)
    first_end, last_end = dates
    in_range = [str(first_end + timedelta(days=i)) for i in range((last_end - first_end).days + 1)]
    _delete_partitions(spark, directory, sorted(set(in_range) - (dates_with_rows or set())))
    if not dates_with_rows:
        return 0
    return _rows(spark, directory, F.col("date").between(F.lit(first_end), F.lit(last_end)))


def _rows(spark: SparkSession, directory: Path, where: Column | None = None) -> int:
    try:
        written = spark.read.parquet(str(directory))
    except AnalysisException:  # nothing was ever written there
        return 0
    return (written if where is None else written.where(where)).count()


def _delete_partitions(spark: SparkSession, directory: Path, dates: Sequence[str]) -> None:
    """Remove ``date=`` partitions through Hadoop's FileSystem (local, HDFS or S3 alike)."""
    if not dates:
        return
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for day in dates:
        path = jvm.org.apache.hadoop.fs.Path(f"{directory}/date={day}")
        path.getFileSystem(hadoop_conf).delete(path, True)


# ---------------------------------------------------------------- entry point


def event_date_range(spark: SparkSession, events_root: Path) -> tuple[date, date]:
    """Default range: window ends from the day after the first impression day to the day
    after the last one."""
    days = _read(spark, events_root, "impressions").agg(F.min("date"), F.max("date")).first()
    if days is None or days[0] is None:
        raise ValueError(f"no impressions under {events_root / 'impressions'}")
    return days[0] + timedelta(days=1), days[1] + timedelta(days=1)


def run(
    spark: SparkSession,
    data_root: Path,
    first_end: date | None = None,
    last_end: date | None = None,
) -> dict[str, int]:
    """Compute and write every feature table for window ends ``first_end..last_end``."""
    # Spark resolves relative paths against the JVM's working directory, not Python's.
    data_root = data_root.resolve()
    events_root = data_root / "events"
    if first_end is None or last_end is None:
        default_first, default_last = event_date_range(spark, events_root)
        first_end, last_end = first_end or default_first, last_end or default_last
    if first_end > last_end:
        raise ValueError(f"--start {first_end} is after --end {last_end}")
    features = transform(extract(spark, events_root, first_end, last_end), first_end, last_end)
    written = {}
    try:
        active_days = {
            row["day"]: row.asDict()
            for row in features.activity.groupBy(
                F.unix_date(F.to_date("event_timestamp")).alias("day")
            )
            .agg(*(F.sum(m).alias(m) for m in COUNTS))
            .collect()
        }
        for name, frame in features.tables.items():
            spec = contract.VIEWS[name]
            directory = contract.table_dir(data_root, name)
            if name in ACTIVE_MEASURES:
                with_rows = ends_with_rows(active_days, ACTIVE_MEASURES[name], first_end, last_end)
                written[name] = load(
                    spark, frame, directory, spec.join_keys, (first_end, last_end), with_rows
                )
            else:
                written[name] = load(spark, frame, directory, spec.join_keys)
    finally:
        for frame in features.kept:
            frame.unpersist()
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, help="first window-end date (UTC)")
    parser.add_argument("--end", type=date.fromisoformat, help="last window-end date (UTC)")
    parser.add_argument("--data-root", type=Path, help="default: ADSTACK_DATA or ./data")
    parser.add_argument("--master", default=None, help="Spark master when not under spark-submit")
    args = parser.parse_args(argv)
    data_root = args.data_root or get_settings().data_root
    with spark_job("adstack-batch-features", args.master) as spark:
        for name, rows in run(spark, data_root, args.start, args.end).items():
            print(f"{name}: {rows} rows")


if __name__ == "__main__":
    main()
