"""Spark batch feature job: wall time and events/s at 1M, 10M and 50M impressions.

What is measured: ``pipelines.batch_features.run`` over every window end of a 30-day
simulation (window ends from the first day + 1 to the last day + 1, so the 30-day
window fills on the last end), writing all seven feature tables. Wall time excludes
the SparkSession start-up, which is timed and reported on its own. Events/s counts the
impressions, clicks and conversions the job reads, per second of wall time.

Baseline: the five daily tables computed by an independent DuckDB SQL implementation
of the same semantics (:func:`reference_sql`), over the same Parquet, writing Parquet
partitioned the same way, timed in the same process (2 threads, the machine's cores).
It is also a correctness check: at the checked sizes both outputs are compared row by
row on every column (floats to a relative tolerance of 1e-9, nulls equal only to
nulls). At 1M the comparison is repeated, untimed, over window ends running
``--tail-days`` past the data, where every entity's all-zero row and the drop after it
fall; inside the data's range no entity goes 31 days without activity.

Data: ``SimulationConfig(days=30, impressions_per_day=ceil(N / 30))`` with users and ads
scaled with the impressions at the default config's ratios (``users = N // 70``,
``ads = N // 1400``). ``write_simulation`` writes its canonical tables straight into
``<cache>/<size>-<config hash>/data/events``, the layout ingest writes (one Parquet
file per table, date and source), instead of ``adstack ingest``: Great Expectations
validation would take minutes at 50M, and simulator rows pass it unchanged. The data
is reused by later runs with the same config.

Repeats: 1M runs 3 times, alternating Spark and DuckDB, and medians are reported;
larger sizes run once because of the time they take. A size is skipped, with the
reason recorded, when the line through the last two sizes' Spark times projects it
past ``--max-minutes``. Spark runs with ``ADSTACK_SPARK_DRIVER_MEMORY`` (default here
8g; local mode, so the driver is the executor).

    python -m bench.batch_features [--sizes 1M,10M,50M] [--check-sizes 1M,10M]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from bench.harness import median, record, use_quick
from feature_repo import contract
from pipelines.simulator import SimulationConfig, write_simulation

CACHE = Path("/tmp/bench-batch")
DATA_VERSION = 1
DAY_US = 86_400_000_000
EVENT_TABLES = ("impressions", "clicks", "conversions")
RECENT_DAYS = contract.LONGEST_BATCH_WINDOW.days + 1
REL_TOL = 1e-9


@dataclass(frozen=True)
class Size:
    label: str
    impressions: int
    days: int = 30

    def config(self) -> SimulationConfig:
        return SimulationConfig(
            days=self.days,
            impressions_per_day=-(-self.impressions // self.days),
            users=self.impressions // 70,
            ads=self.impressions // 1_400,
        )


SIZES = {
    s.label: s
    for s in (
        Size("100k", 100_000),  # --quick only
        Size("1M", 1_000_000),
        Size("10M", 10_000_000),
        Size("50M", 50_000_000),
    )
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def config_digest(config: SimulationConfig) -> str:
    fields = {k: str(v) for k, v in asdict(config).items()} | {"version": DATA_VERSION}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def dataset(size: Size, cache: Path) -> Path:
    """The data root holding ``events/`` for ``size``; simulated once per config."""
    config = size.config()
    digest = config_digest(config)
    root = cache / f"{size.label}-{digest}"
    marker = root / "simulation.json"
    if marker.exists() and json.loads(marker.read_text()).get("digest") == digest:
        return root / "data"
    shutil.rmtree(root, ignore_errors=True)
    log(f"simulating {size.label}: {config}")
    start = time.perf_counter()
    counts = write_simulation(config, root / "data" / "events", root / "ground_truth")
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"digest": digest, "counts": counts, "seconds": seconds}))
    log(f"simulated {size.label} in {seconds:.0f}s: {counts}")
    return root / "data"


def window_ends(config: SimulationConfig) -> tuple[date, date]:
    first_day = config.start.date()
    return first_day + timedelta(days=1), first_day + timedelta(days=config.days)


def events_read(data_root: Path, first_end: date, last_end: date) -> int:
    """Impression, click and conversion rows in the date partitions the job reads."""
    from pipelines.batch_features import history_start

    lo, rows = history_start(first_end), 0
    for table in EVENT_TABLES:
        for file in (data_root / "events" / table).glob("date=*/*.parquet"):
            day = date.fromisoformat(file.parent.name.removeprefix("date="))
            if lo <= day < last_end:
                rows += pq.ParquetFile(file).metadata.num_rows
    return rows


# ---------------------------------------------------------------- Spark


def start_spark(driver_memory: str):
    os.environ.setdefault("ADSTACK_SPARK_DRIVER_MEMORY", driver_memory)
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell"
    )
    from core.spark import spark_session

    start = time.perf_counter()
    spark = spark_session("bench-batch-features")
    return spark, time.perf_counter() - start


def run_spark(spark, data_root: Path, first_end: date, last_end: date) -> float:
    from pipelines.batch_features import run

    shutil.rmtree(data_root / contract.FEATURES_DIR, ignore_errors=True)
    start = time.perf_counter()
    run(spark, data_root, first_end, last_end)
    return time.perf_counter() - start


# ---------------------------------------------------------------- DuckDB reference

MACROS = """
CREATE OR REPLACE MACRO capped(v) AS CASE WHEN v > 1 THEN 1.0 ELSE v END;
CREATE OR REPLACE MACRO rate(n, d) AS capped(CASE WHEN d > 0 THEN n / d END);
CREATE OR REPLACE MACRO smoothed(n, d, prior, strength) AS
    capped(coalesce((n + prior * strength) / (d + strength), rate(n, d)));
"""


def _scan(data_root: Path, table: str) -> str:
    glob = data_root / "events" / table / "date=*" / "*.parquet"
    return f"read_parquet('{glob}', hive_partitioning = true)"


def events_sql(data_root: Path, last_end: date) -> str:
    """Table ``ev``: one row per impression, attributed click and attributed conversion.

    Each row carries its own UTC day, the ad's owners and category, 0/1 counts and the
    spend it bills (the clearing price: at the click for CPC, at the conversion for CPA).
    """
    before = f"date < DATE '{last_end}'"
    click_us = contract.CLICK_WINDOW // timedelta(microseconds=1)
    attribution_us = contract.ATTRIBUTION_WINDOW // timedelta(microseconds=1)
    keys = "user_id, ad_id, campaign_id, advertiser_id, category"
    return f"""
CREATE OR REPLACE TEMP TABLE ev AS
WITH shown AS (
    SELECT i.impression_id, epoch_us(i.event_timestamp) AS at_us, i.user_id, i.ad_id,
           a.campaign_id, a.advertiser_id, a.category, a.bid_type,
           coalesce(i.price_paid, 0.0) AS price
    FROM {_scan(data_root, "impressions")} AS i
    JOIN {_scan(data_root, "ads")} AS a USING (ad_id)
    WHERE i.{before}
),
clicked AS (
    SELECT s.* REPLACE (epoch_us(c.event_timestamp) AS at_us)
    FROM {_scan(data_root, "clicks")} AS c JOIN shown AS s USING (impression_id)
    WHERE c.{before} AND epoch_us(c.event_timestamp) - s.at_us BETWEEN 0 AND {click_us}
),
converted AS (
    SELECT k.* REPLACE (epoch_us(v.event_timestamp) AS at_us)
    FROM {_scan(data_root, "conversions")} AS v JOIN clicked AS k USING (impression_id)
    WHERE v.{before} AND epoch_us(v.event_timestamp) - k.at_us BETWEEN 0 AND {attribution_us}
)
SELECT at_us // {DAY_US} AS day, {keys},
       1 AS impressions, 0 AS clicks, 0 AS conversions, 0.0::DOUBLE AS spend
FROM shown
UNION ALL
SELECT at_us // {DAY_US}, {keys}, 0, 1, 0, CASE WHEN bid_type = 'CPC' THEN price ELSE 0.0 END
FROM clicked
UNION ALL
SELECT at_us // {DAY_US}, {keys}, 0, 0, 1, CASE WHEN bid_type = 'CPA' THEN price ELSE 0.0 END
FROM converted
"""


def distinct_ads_sql() -> str:
    """Per user: running distinct-ads counts at every step point ``e`` (days since epoch).

    A (user, ad) pair seen on day ``d`` and last seen before on day ``p`` is first seen
    inside window ``[E - n, E)`` exactly for ``E`` in ``[max(d + 1, p + n + 1), d + n]``:
    +1 at the start of that range, -1 after its end, summed from the beginning.
    """
    windows = contract.BATCH_WINDOWS
    parts = []
    for w in windows:
        begin = f"greatest(day + 1, coalesce(previous + {w.days + 1}, day + 1))"
        plus = ", ".join(f"{int(v is w)} AS distinct_ads_{v.label}" for v in windows)
        minus = ", ".join(f"{-int(v is w)} AS distinct_ads_{v.label}" for v in windows)
        parts.append(f"SELECT user_id, {begin} AS e, {plus} FROM seen")
        parts.append(f"SELECT user_id, day + {w.days + 1} AS e, {minus} FROM seen")
    union = "\n    UNION ALL ".join(parts)
    sums = ", ".join(f"sum(distinct_ads_{w.label}) AS distinct_ads_{w.label}" for w in windows)
    running = ", ".join(
        f"sum(distinct_ads_{w.label}) OVER running AS distinct_ads_{w.label}" for w in windows
    )
    return f"""
    WITH pairs AS (SELECT DISTINCT user_id, ad_id, day FROM ev WHERE impressions > 0),
    seen AS (
        SELECT user_id, day, lag(day) OVER (PARTITION BY user_id, ad_id ORDER BY day) AS previous
        FROM pairs
    ),
    steps AS (
        SELECT user_id, e, {sums}
        FROM ({union})
        GROUP BY user_id, e
    )
    SELECT user_id, e, {running}
    FROM steps WINDOW running AS (PARTITION BY user_id ORDER BY e ROWS UNBOUNDED PRECEDING)
"""


def rolled_sql(
    name: str,
    keys: list[str],
    measures: list[str],
    first_end: date,
    last_end: date,
    distinct_ads: bool = False,
) -> str:
    """Table ``name``: ``keys``, ``e`` (window end, days since epoch), ``<measure>_<w>``.

    Rows exist for the window ends in range with activity (any measure) on one of the
    ``RECENT_DAYS`` days before them: islands of active days, each covering ``[first +
    1, last + RECENT_DAYS]``. Each end is joined to the key's daily sums of those days
    and every window sums the days it covers. ``distinct_ads`` adds the user's distinct
    ads per window, the running step sum at the latest step point at or before the end.
    """
    k = ", ".join(keys)
    first, last = ((d - date(1970, 1, 1)).days for d in (first_end, last_end))
    active = " + ".join(measures)

    def cast(m: str) -> str:
        return "" if m == "spend" else "::BIGINT"

    daily = ", ".join(f"sum({m}){cast(m)} AS {m}" for m in measures)
    windowed = ", ".join(
        f"coalesce(sum(d.{m}) FILTER (WHERE d.day >= n.e - {w.days}), 0){cast(m)} AS {m}_{w.label}"
        for w in contract.BATCH_WINDOWS
        for m in measures
    )
    join_keys = " AND ".join(f"d.{c} = n.{c}" for c in keys)
    distinct, distinct_join = "", ""
    if distinct_ads:
        distinct = ", " + ", ".join(
            f"coalesce(a.distinct_ads_{w.label}, 0)::BIGINT AS distinct_ads_{w.label}"
            for w in contract.BATCH_WINDOWS
        )
        distinct_join = (
            f"ASOF LEFT JOIN ({distinct_ads_sql()}) AS a ON a.user_id = w.user_id AND a.e <= w.e"
        )
    return f"""
CREATE OR REPLACE TEMP TABLE {name} AS
WITH daily AS (SELECT {k}, day, {daily} FROM ev GROUP BY {k}, day),
marked AS (
    SELECT {k}, day,
           CASE WHEN day - lag(day) OVER (PARTITION BY {k} ORDER BY day) <= {RECENT_DAYS}
                THEN 0 ELSE 1 END AS new_island
    FROM daily WHERE {active} > 0
),
islands AS (
    SELECT {k}, day, sum(new_island) OVER (PARTITION BY {k} ORDER BY day) AS island
    FROM marked
),
spans AS (
    SELECT {k}, greatest(min(day) + 1, {first}) AS lo,
           least(max(day) + {RECENT_DAYS}, {last}) AS hi
    FROM islands GROUP BY {k}, island
),
ends AS (SELECT {k}, unnest(range(lo, hi + 1)) AS e FROM spans WHERE lo <= hi),
w AS (
    SELECT {", ".join(f"n.{c}" for c in keys)}, n.e, {windowed}
    FROM ends AS n JOIN daily AS d
      ON {join_keys} AND d.day BETWEEN n.e - {RECENT_DAYS} AND n.e - 1
    GROUP BY ALL
)
SELECT w.*{distinct} FROM w {distinct_join}
"""


def _view_select(spec: contract.ViewSpec, source: str, columns: dict[str, str]) -> str:
    features = ",\n    ".join(f"{columns[name]} AS {name}" for name in spec.feature_names)
    keys = ", ".join(spec.join_keys)
    return (
        f"SELECT {keys}, to_timestamp(e * 86400) AS event_timestamp,\n    {features},\n"
        f"    (DATE '1970-01-01' + e::INTEGER)::VARCHAR AS date\nFROM {source}"
    )


def _windows() -> list[str]:
    return [w.label for w in contract.BATCH_WINDOWS]


def user_daily_sql() -> str:
    columns = {}
    for w in _windows():
        columns |= {
            f"user_impressions_{w}": f"impressions_{w}",
            f"user_clicks_{w}": f"clicks_{w}",
            f"user_conversions_{w}": f"conversions_{w}",
            f"user_ctr_{w}": f"rate(clicks_{w}, impressions_{w})",
            f"user_cvr_{w}": f"rate(conversions_{w}, clicks_{w})",
            f"user_distinct_ads_{w}": f"distinct_ads_{w}",
        }
    return _view_select(contract.USER_DAILY, "user_rolled", columns)


def ad_daily_sql(last_end: date, data_root: Path) -> str:
    columns = {}
    for w in _windows():
        columns |= {
            f"ad_impressions_{w}": f"r.impressions_{w}",
            f"ad_clicks_{w}": f"r.clicks_{w}",
            f"ad_conversions_{w}": f"r.conversions_{w}",
            f"ad_ctr_{w}": f"smoothed(r.clicks_{w}, r.impressions_{w}, "
            f"rate(c.clicks_{w}, c.impressions_{w}), {contract.CTR_PRIOR_STRENGTH})",
            f"ad_cvr_{w}": f"smoothed(r.conversions_{w}, r.clicks_{w}, "
            f"rate(c.conversions_{w}, c.clicks_{w}), {contract.CVR_PRIOR_STRENGTH})",
        }
    age = f"(e * {DAY_US} - epoch_us(f.first_at)) / {DAY_US}"
    columns["ad_days_since_first_impression"] = f"CASE WHEN {age} > 0 THEN {age} END"
    source = f"""ad_rolled AS r
JOIN (SELECT ad_id, category FROM {_scan(data_root, "ads")}) AS a USING (ad_id)
LEFT JOIN category_rolled AS c USING (category, e)
LEFT JOIN (
    SELECT ad_id, min(event_timestamp) AS first_at FROM {_scan(data_root, "impressions")}
    WHERE date < DATE '{last_end}' GROUP BY ad_id
) AS f USING (ad_id)"""
    return _view_select(contract.AD_DAILY, source, columns)


def spender_daily_sql(spec: contract.ViewSpec, prefix: str) -> str:
    columns = {}
    for w in _windows():
        columns |= {
            f"{prefix}_impressions_{w}": f"impressions_{w}",
            f"{prefix}_clicks_{w}": f"clicks_{w}",
            f"{prefix}_conversions_{w}": f"conversions_{w}",
            f"{prefix}_ctr_{w}": f"rate(clicks_{w}, impressions_{w})",
            f"{prefix}_cvr_{w}": f"rate(conversions_{w}, clicks_{w})",
            f"{prefix}_spend_{w}": f"spend_{w}",
        }
    return _view_select(spec, f"{prefix}_rolled", columns)


def user_category_daily_sql() -> str:
    columns = {}
    for w in _windows():
        columns |= {
            f"user_category_impressions_{w}": f"r.impressions_{w}",
            f"user_category_clicks_{w}": f"r.clicks_{w}",
            f"user_category_ctr_{w}": f"smoothed(r.clicks_{w}, r.impressions_{w}, "
            f"rate(c.clicks_{w}, c.impressions_{w}), {contract.CTR_PRIOR_STRENGTH})",
            f"user_category_click_share_{w}": f"rate(r.clicks_{w}, u.clicks_{w})",
        }
    source = """user_category_rolled AS r
LEFT JOIN category_rolled AS c USING (category, e)
LEFT JOIN user_rolled AS u USING (user_id, e)"""
    return _view_select(contract.USER_CATEGORY_DAILY, source, columns)


def reference_sql(data_root: Path, first_end: date, last_end: date) -> tuple[list[str], dict]:
    """Statements building the rolled tables, and the SELECT of each daily view."""
    counts = ["impressions", "clicks", "conversions"]
    spender = [*counts, "spend"]
    statements = [
        MACROS,
        events_sql(data_root, last_end),
        rolled_sql("category_rolled", ["category"], counts, first_end, last_end),
        rolled_sql("user_rolled", ["user_id"], counts, first_end, last_end, distinct_ads=True),
        rolled_sql("ad_rolled", ["ad_id"], counts, first_end, last_end),
        rolled_sql("advertiser_rolled", ["advertiser_id"], spender, first_end, last_end),
        rolled_sql("campaign_rolled", ["campaign_id"], spender, first_end, last_end),
        rolled_sql(
            "user_category_rolled",
            ["user_id", "category"],
            ["impressions", "clicks"],
            first_end,
            last_end,
        ),
    ]
    views = {
        contract.USER_DAILY.name: user_daily_sql(),
        contract.AD_DAILY.name: ad_daily_sql(last_end, data_root),
        contract.ADVERTISER_DAILY.name: spender_daily_sql(contract.ADVERTISER_DAILY, "advertiser"),
        contract.CAMPAIGN_DAILY.name: spender_daily_sql(contract.CAMPAIGN_DAILY, "campaign"),
        contract.USER_CATEGORY_DAILY.name: user_category_daily_sql(),
    }
    return statements, views


def connect(memory_limit: str, spill: Path) -> duckdb.DuckDBPyConnection:
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


def run_duckdb(
    data_root: Path, out: Path, first_end: date, last_end: date, memory_limit: str
) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    statements, views = reference_sql(data_root, first_end, last_end)
    start = time.perf_counter()
    with connect(memory_limit, out.parent / "duckdb-spill") as con:
        for sql in statements:
            con.execute(sql)
        for name, select in views.items():
            con.execute(f"COPY ({select}) TO '{out / name}' (FORMAT parquet, PARTITION_BY (date))")
    return time.perf_counter() - start


# ---------------------------------------------------------------- comparison


def _read_view(directory: Path, first_end: date, last_end: date) -> str:
    return (
        f"SELECT * EXCLUDE (date) FROM read_parquet('{directory}/date=*/*.parquet', "
        f"hive_partitioning = true) WHERE date BETWEEN DATE '{first_end}' AND DATE '{last_end}'"
    )


def _is_float(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    kind = con.execute(f"SELECT typeof({column}) FROM {table} LIMIT 1").fetchone()
    return kind is not None and kind[0] in ("DOUBLE", "FLOAT")


def compare_view(
    con: duckdb.DuckDBPyConnection,
    spec: contract.ViewSpec,
    spark_dir: Path,
    duck_dir: Path,
    first_end: date,
    last_end: date,
) -> dict:
    """Row sets (by keys and window end) and every feature, Spark against DuckDB."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE s AS {_read_view(spark_dir, first_end, last_end)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE d AS {_read_view(duck_dir, first_end, last_end)}")
    keys = [*spec.join_keys, "event_timestamp"]
    on = " AND ".join(f"s.{k} = d.{k}" for k in keys)
    schema = {
        name: (
            con.execute(f"SELECT typeof({name}) FROM s LIMIT 1").fetchone(),
            con.execute(f"SELECT typeof({name}) FROM d LIMIT 1").fetchone(),
        )
        for name in [*keys, *spec.feature_names]
    }
    result = {
        "spark_rows": con.execute("SELECT count(*) FROM s").fetchone()[0],
        "duckdb_rows": con.execute("SELECT count(*) FROM d").fetchone()[0],
        "duplicate_keys_spark": _duplicates(con, "s", keys),
        "duplicate_keys_duckdb": _duplicates(con, "d", keys),
        "only_spark": con.execute(f"SELECT count(*) FROM s ANTI JOIN d ON {on}").fetchone()[0],
        "only_duckdb": con.execute(f"SELECT count(*) FROM d ANTI JOIN s ON {on}").fetchone()[0],
        "type_differences": {
            n: [t[0] if t else None for t in pair]
            for n, pair in schema.items()
            if pair[0] != pair[1]
        },
    }
    longest = contract.LONGEST_BATCH_WINDOW.label
    counts_30d = [
        n for n in spec.feature_names if n.endswith(longest) and not _is_float(con, "s", n)
    ]
    zero = " AND ".join(f"{n} = 0" for n in counts_30d)
    result["all_zero_rows_spark"] = con.execute(f"SELECT count(*) FROM s WHERE {zero}").fetchone()[
        0
    ]
    differs = {name: _differs(con, name) for name in spec.feature_names}
    counts = con.execute(
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE {c})" for c in differs.values())
        + f" FROM s JOIN d ON {on}"
    ).fetchone()
    result["mismatches"] = {n: c for n, c in zip(differs, counts, strict=True) if c}
    result["examples"] = {
        name: _examples(con, keys, name, on, differs[name]) for name in result["mismatches"]
    }
    result["match"] = (
        result["spark_rows"] == result["duckdb_rows"]
        and not result["only_spark"]
        and not result["only_duckdb"]
        and not result["duplicate_keys_spark"]
        and not result["duplicate_keys_duckdb"]
        and not result["mismatches"]
    )
    return result


def _duplicates(con: duckdb.DuckDBPyConnection, table: str, keys: list[str]) -> int:
    k = ", ".join(keys)
    sql = f"SELECT count(*) FROM (SELECT {k} FROM {table} GROUP BY {k} HAVING count(*) > 1)"
    return con.execute(sql).fetchone()[0]


def _differs(con: duckdb.DuckDBPyConnection, name: str) -> str:
    a, b = f"s.{name}", f"d.{name}"
    if _is_float(con, "s", name) or _is_float(con, "d", name):
        close = f"abs({a} - {b}) <= {REL_TOL} * greatest(abs({a}), abs({b}))"
        return f"NOT (({a} IS NULL AND {b} IS NULL) OR coalesce({close}, false))"
    return f"{a} IS DISTINCT FROM {b}"


def _examples(con, keys: list[str], name: str, on: str, condition: str) -> list[dict]:
    cols = ", ".join(f"s.{k}::VARCHAR AS {k}" for k in keys)
    rows = con.execute(
        f"SELECT {cols}, s.{name} AS spark, d.{name} AS duckdb FROM s JOIN d ON {on} "
        f"WHERE {condition} ORDER BY ALL LIMIT 5"
    )
    names = [c[0] for c in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def compare(data_root: Path, duck_out: Path, first_end: date, last_end: date) -> dict:
    spark_features = data_root / contract.FEATURES_DIR
    with connect("4GB", duck_out.parent / "duckdb-spill") as con:
        return {
            spec.name: compare_view(
                con, spec, spark_features / spec.name, duck_out / spec.name, first_end, last_end
            )
            for spec in contract.DAILY_VIEWS
        }


# ---------------------------------------------------------------- driver


def tail_check(
    spark,
    data_root: Path,
    duck_out: Path,
    first_end: date,
    last_end: date,
    tail_days: int,
    memory_limit: str,
) -> dict:
    """Untimed: both sides over window ends running ``tail_days`` past the data, so every
    entity's last rows, its all-zero row and the drop after it are compared too."""
    tail_end = last_end + timedelta(days=tail_days)
    run_spark(spark, data_root, first_end, tail_end)
    run_duckdb(data_root, duck_out, first_end, tail_end, memory_limit)
    return {
        "window_ends": [str(first_end), str(tail_end)],
        "comparison": compare(data_root, duck_out, first_end, tail_end),
    }


def bench_size(
    spark, size: Size, repeats: int, cache: Path, memory_limit: str, check: bool, tail_days: int
) -> dict:
    data_root = dataset(size, cache)
    config = size.config()
    first_end, last_end = window_ends(config)
    events = events_read(data_root, first_end, last_end)
    duck_out = data_root.parent / "duckdb-features"
    spark_seconds, duck_seconds = [], []
    for i in range(repeats):
        log(f"{size.label} run {i + 1}/{repeats}: Spark")
        spark_seconds.append(run_spark(spark, data_root, first_end, last_end))
        log(f"{size.label} Spark {spark_seconds[-1]:.1f}s; DuckDB")
        duck_seconds.append(run_duckdb(data_root, duck_out, first_end, last_end, memory_limit))
        log(f"{size.label} DuckDB {duck_seconds[-1]:.1f}s")
    spark_s, duck_s = median(spark_seconds), median(duck_seconds)
    figures = {
        "size": size.label,
        "simulation": {k: str(v) for k, v in asdict(config).items()},
        "window_ends": [str(first_end), str(last_end)],
        "events_read": events,
        "repeats": repeats,
        "spark_seconds": spark_seconds,
        "duckdb_seconds": duck_seconds,
        "spark_seconds_median": spark_s,
        "duckdb_seconds_median": duck_s,
        "spark_over_duckdb": spark_s / duck_s,
        "spark_events_per_s": events / spark_s,
        "duckdb_events_per_s": events / duck_s,
        "spark_us_per_event": spark_s / events * 1e6,
        "duckdb_us_per_event": duck_s / events * 1e6,
    }
    if check:
        log(f"{size.label}: comparing outputs")
        figures["comparison"] = compare(data_root, duck_out, first_end, last_end)
        figures["outputs_match"] = all(v["match"] for v in figures["comparison"].values())
        if tail_days:
            log(f"{size.label}: comparing outputs with {tail_days} window ends past the data")
            tail = tail_check(
                spark, data_root, duck_out, first_end, last_end, tail_days, memory_limit
            )
            figures["tail_check"] = tail
            figures["outputs_match"] &= all(v["match"] for v in tail["comparison"].values())
        log(f"{size.label}: outputs match: {figures['outputs_match']}")
    return figures


def too_slow(results: list[dict], size: Size, cache: Path, max_minutes: float) -> str | None:
    """Why ``size`` is skipped: its Spark time extrapolated from the last two sizes run.

    The line through the last two (events, seconds) points keeps the fixed cost apart
    from the per-event cost; the first two sizes always run.
    """
    if len(results) < 2:
        return None
    a, b = results[-2], results[-1]
    events = events_read(dataset(size, cache), *window_ends(size.config()))
    slope = (b["spark_seconds_median"] - a["spark_seconds_median"]) / (
        b["events_read"] - a["events_read"]
    )
    slope = max(slope, b["spark_seconds_median"] / b["events_read"] / 2)
    minutes = (b["spark_seconds_median"] + slope * (events - b["events_read"])) / 60
    if minutes <= max_minutes:
        return None
    return (
        f"Spark projected at {minutes:.0f} min for {events:,} events (line through "
        f"{a['size']} and {b['size']}: {slope * 1e6:.1f} us per extra event), over the "
        f"{max_minutes:.0f} min limit"
    )


def summarize(results: list[dict], skipped: list[dict], startup: float, command: str) -> None:
    base = results[0]
    for r in results:
        r["spark_growth_vs_first"] = r["spark_us_per_event"] / base["spark_us_per_event"]
        r["duckdb_growth_vs_first"] = r["duckdb_us_per_event"] / base["duckdb_us_per_event"]
    checked = [r for r in results if "outputs_match" in r]
    match = all(r["outputs_match"] for r in checked)
    figures = {
        "spark_startup_seconds": startup,
        "spark_driver_memory": os.environ.get("ADSTACK_SPARK_DRIVER_MEMORY"),
        "baseline": "independent DuckDB SQL implementation of the five daily views, same Parquet",
        "sizes": results,
        "skipped": skipped,
        "outputs_match": match,
        "outputs_checked_at": [r["size"] for r in checked],
        "goal": "Spark within 3x of DuckDB at 10M; time per event flat across sizes",
    }
    result = "; ".join(
        f"{r['size']}: Spark {r['spark_seconds_median']:.0f}s "
        f"({r['spark_events_per_s'] / 1e3:.0f}k events/s, "
        f"{r['spark_us_per_event']:.2f}us/event, x{r['spark_growth_vs_first']:.2f} vs "
        f"{base['size']})"
        for r in results
    )
    result += "".join(f"; {s['size']} skipped: {s['reason']}" for s in skipped)
    result += (
        f"; start-up {startup:.0f}s; 1M median of {base['repeats']}, larger sizes once; "
        f"outputs match at {','.join(figures['outputs_checked_at']) or 'none'}: {match}"
    )
    record(
        "batch_features",
        figures,
        result=result,
        baseline="DuckDB SQL "
        + ", ".join(f"{r['size']} {r['duckdb_seconds_median']:.0f}s" for r in results),
        ratio=", ".join(f"{r['size']} {r['spark_over_duckdb']:.1f}x" for r in results),
        command=command,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M,50M", help=f"comma list of {list(SIZES)}")
    parser.add_argument("--repeats-small", type=int, default=3, help="repeats at 1M")
    parser.add_argument("--repeats-large", type=int, default=1, help="repeats above 1M")
    parser.add_argument("--check-sizes", default="1M,10M", help="sizes whose outputs are compared")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--driver-memory", default="8g", help="unless ADSTACK_SPARK_DRIVER_MEMORY")
    parser.add_argument("--duckdb-memory", default="8GB")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=25.0,
        help="skip a size whose Spark run, projected from the previous size, would take longer",
    )
    parser.add_argument(
        "--tail-days",
        type=int,
        default=RECENT_DAYS + 1,
        help="at 1M, also compare (untimed) over window ends this far past the data",
    )
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args()
    if args.quick:
        use_quick()
        args.sizes, args.check_sizes, args.repeats_small, args.tail_days = "100k", "100k", 1, 0
    sizes = [SIZES[s] for s in args.sizes.split(",")]
    checks = set(args.check_sizes.split(","))
    for size in sizes:
        dataset(size, args.cache)
    if args.generate_only:
        return
    spark, startup = start_spark(args.driver_memory)
    log(f"Spark session started in {startup:.1f}s")
    results: list[dict] = []
    skipped: list[dict] = []
    try:
        for size in sizes:
            reason = too_slow(results, size, args.cache, args.max_minutes)
            if reason:
                log(f"skipping {size.label}: {reason}")
                skipped.append({"size": size.label, "reason": reason})
                continue
            repeats = args.repeats_small if size.label == "1M" else args.repeats_large
            tail = args.tail_days if size.label == "1M" else 0
            figures = bench_size(
                spark, size, repeats, args.cache, args.duckdb_memory, size.label in checks, tail
            )
            results.append(figures)
            print(json.dumps({k: v for k, v in figures.items() if k != "simulation"}, default=str))
    finally:
        spark.stop()
    command = "python -m bench.batch_features " + " ".join(sys.argv[1:])
    if not args.no_record and results:
        summarize(results, skipped, startup, command.strip())


if __name__ == "__main__":
    main()
