"""Materialisation throughput (entity rows/s) and peak memory: ours vs Feast's own.

Each case writes synthetic feature tables in the repo's layout (contract columns,
``<data>/features/<view>/date=*/part-*.parquet``, microsecond UTC stamps, a few nulls),
applies a copy of ``feature_repo/`` with ``feast apply`` and then materialises the same
interval into an empty Redis database with:

* ``ours``: ``pipelines.materialize.materialize`` (Feast's reads and semantics, column-wise
  serialisation, raw pipelined ``HSET``s);
* ``feast``: ``FeatureStore.materialize``, Feast 0.67's default local engine (baseline);
* ``feast_knobs``: the same with Feast's own speed knobs, ``skip_dedup: true`` and
  ``online_write_batch_size: 10000`` (not equivalent: it drops the dedup against Redis).

Every run is its own subprocess, so the peak RSS (``ru_maxrss``) is that run's alone; the
figure includes the interpreter and its imports, reported separately as ``import_rss``.

    python -m bench.materialize [--entities 100000 1000000] [--feast-max 100000]

Feast's baselines run only up to ``--feast-max`` entities: at 100k rows its local engine
peaks near 2 GiB, so 1M rows would need well over 10 GiB on a machine shared with others.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from adstack import redis_server
from bench.harness import ROOT, median, record, use_quick
from feature_repo.contract import FLOAT64, INT64, VIEWS, ViewSpec

FEAST = str(Path(sys.executable).with_name("feast"))
KNOBS_YAML = "feature_store.knobs.yaml"
ONLINE_TYPE = "  type: core.feast_redis.EnvRedisOnlineStore\n"
BATCHES = "materialization:\n  online_write_batch_size: 10000\n"
WORKERS = ("ours", "feast", "feast_knobs")


def synthetic_table(
    spec: ViewSpec, ids: np.ndarray, stamp: datetime, rng: np.random.Generator, nulls: float
) -> pa.Table:
    """Rows for ``ids`` stamped ``stamp``: contract columns, ``nulls`` share of nulls."""
    columns: dict[str, pa.Array] = {}
    for entity in spec.entities:
        values = ids if entity.dtype == INT64 else np.char.add("cat_", (ids % 7).astype(str))
        columns[entity.join_key] = pa.array(values)
    for feature in spec.features:
        missing = rng.random(len(ids)) < nulls
        if feature.dtype == INT64:
            columns[feature.name] = pa.array(rng.integers(0, 10_000, len(ids)))
        elif feature.dtype == FLOAT64:
            values = rng.normal(0.0, 1.0, len(ids))
            values[rng.random(len(ids)) < nulls] = np.nan
            columns[feature.name] = pa.array(values, mask=missing)
        else:
            choices = np.array(["a", "b", "é", ""])[rng.integers(0, 4, len(ids))]
            columns[feature.name] = pa.array(choices, mask=missing)
    columns["event_timestamp"] = pa.array(
        np.full(len(ids), stamp.replace(tzinfo=None), "datetime64[us]"), pa.timestamp("us", "UTC")
    )
    return pa.table(columns)


def write_table(data: Path, view: str, table: pa.Table, part: str) -> Path:
    """``<data>/features/<view>/date=<UTC date of the first stamp>/<part>.parquet``."""
    first = table.column("event_timestamp")[0].as_py()
    path = data / "features" / view / f"date={first:%Y-%m-%d}" / f"{part}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def make_project(root: Path, redis_url: str) -> Path:
    """Copy ``feature_repo/*.py`` and ``*.yaml`` under ``root`` and ``feast apply`` it."""
    repo = root / "feature_repo"
    repo.mkdir(parents=True)
    for pattern in ("*.py", "*.yaml"):
        for file in (ROOT / "feature_repo").glob(pattern):
            shutil.copy(file, repo / file.name)
    (root / "data").mkdir(exist_ok=True)
    base = (repo / "feature_store.yaml").read_text()
    knobs = base.replace(ONLINE_TYPE, ONLINE_TYPE + "  skip_dedup: true\n", 1) + BATCHES
    (repo / KNOBS_YAML).write_text(knobs)
    subprocess.run(
        [FEAST, "-c", str(repo), "apply"],
        env=project_env(root, redis_url),
        check=True,
        capture_output=True,
    )
    return repo


def project_env(root: Path, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "ADSTACK_DATA": str(root / "data"),
        "REDIS_URL": redis_url,
        "ADSTACK_OFFLINE_STORE": "duckdb",
    }


def run_worker(
    worker: str, root: Path, redis_url: str, start: datetime, end: datetime, views: list[str]
) -> dict:
    """One materialisation in a fresh subprocess; returns its figures."""
    command = [sys.executable, "-m", "bench.materialize", "--worker", worker, "--repo"]
    command += [str(root / "feature_repo"), "--start", start.isoformat(), "--end", end.isoformat()]
    command += ["--views", *views]
    result = subprocess.run(
        command, env=project_env(root, redis_url), cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{worker} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_main(args: argparse.Namespace) -> None:
    from feast import FeatureStore

    from pipelines.materialize import materialize

    start, end = datetime.fromisoformat(args.start), datetime.fromisoformat(args.end)
    import_rss = _rss_mib()
    began = time.perf_counter()
    if args.worker == "ours":
        rows = sum(materialize(args.repo, start, end, args.views).values())
    else:
        yaml = args.repo / (KNOBS_YAML if args.worker == "feast_knobs" else "feature_store.yaml")
        store = FeatureStore(repo_path=str(args.repo), fs_yaml_file=yaml)
        store.materialize(start, end, feature_views=args.views)
        rows = -1
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "rows": rows, "peak_rss_mib": peak, "import_rss": import_rss}
        )
    )


def prepare_case(root: Path, redis_url: str, views: list[str], entities: int) -> int:
    """Write one day of rows per view for ``entities`` ids; returns the rows written."""
    make_project(root, redis_url)
    rng = np.random.default_rng(7)
    stamp = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ids = np.arange(entities, dtype=np.int64)
    for view in views:
        write_table(root / "data", view, synthetic_table(VIEWS[view], ids, stamp, rng, 0.05), "p0")
    return entities * len(views)


def run_case(name: str, views: list[str], entities: int, repeats: dict[str, int], url: str) -> dict:
    """Time each worker its number of repeats into a flushed database; check the rows."""
    client = redis.Redis.from_url(url)
    stamp = datetime.now(UTC)
    start, end = stamp - timedelta(days=3), stamp + timedelta(days=1)
    with tempfile.TemporaryDirectory() as scratch:
        rows = prepare_case(Path(scratch), url, views, entities)
        figures: dict = {"views": views, "entities": entities, "rows": rows}
        for worker, times in repeats.items():
            runs = []
            for _ in range(times):
                client.flushdb()
                runs.append(run_worker(worker, Path(scratch), url, start, end, views))
                keys = client.dbsize()
                assert keys >= entities, f"{worker} wrote {keys} keys for {entities} entities"
                assert runs[-1]["rows"] in (-1, rows), runs[-1]
            seconds = [r["seconds"] for r in runs]
            figures[worker] = {
                "seconds": seconds,
                "rows_per_s_median": rows / median(seconds),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "import_rss_mib": max(r["import_rss"] for r in runs),
            }
            print(f"{name} {worker}: {rows / median(seconds):,.0f} rows/s", flush=True)
    client.close()
    return figures


def summary(cases: dict[str, dict]) -> tuple[str, str, str]:
    results, baselines, ratios = [], [], []
    for name, case in cases.items():
        ours = case["ours"]
        results.append(
            f"{name}: {ours['rows_per_s_median'] / 1e3:.0f}k rows/s, "
            f"peak {ours['peak_rss_mib']:.0f} MiB"
        )
        if "feast" in case:
            feast = case["feast"]
            baselines.append(
                f"{name}: Feast {feast['rows_per_s_median'] / 1e3:.1f}k rows/s, "
                f"peak {feast['peak_rss_mib']:.0f} MiB"
            )
            ratios.append(
                f"{name}: {ours['rows_per_s_median'] / feast['rows_per_s_median']:.1f}x faster, "
                f"{feast['peak_rss_mib'] / ours['peak_rss_mib']:.1f}x less memory"
            )
    return "; ".join(results), "; ".join(baselines), "; ".join(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--all-views-entities", type=int, default=20_000)
    parser.add_argument("--feast-max", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--worker", choices=WORKERS)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--start")
    parser.add_argument("--end")
    parser.add_argument("--views", nargs="+")
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args()
    if args.quick:
        use_quick()
        args.entities, args.all_views_entities, args.feast_max = [20_000], 2_000, 5_000
        args.repeats = 1
    if args.worker:
        worker_main(args)
        return

    with tempfile.TemporaryDirectory() as server_dir:
        server = redis_server.start(Path(server_dir), redis_server.free_port(), persist=False)
        try:
            cases = run_cases(args, server.url)
        finally:
            redis_server.stop(Path(server_dir))
    result, baseline, ratio = summary(cases)
    record(
        "materialize",
        {"cases": cases, "baseline": "Feast 0.67 FeatureStore.materialize, local engine"},
        result=result,
        baseline=baseline,
        ratio=ratio,
        command="python -m bench.materialize",
    )
    print(json.dumps(cases, indent=2))


def run_cases(args: argparse.Namespace, url: str) -> dict[str, dict]:
    """user_daily at each size (Feast baselines up to ``--feast-max``), then all views."""
    cases: dict[str, dict] = {}
    for entities in args.entities:
        repeats = {"ours": args.repeats}
        if entities <= args.feast_max:
            repeats |= {"feast": args.baseline_repeats, "feast_knobs": args.baseline_repeats}
        name = f"user_daily {entities // 1000}k"
        cases[name] = run_case(name, ["user_daily"], entities, repeats, url)
    if args.all_views_entities:
        name = f"all 7 views x {args.all_views_entities // 1000}k"
        repeats = {"ours": args.repeats, "feast": args.baseline_repeats}
        cases[name] = run_case(name, list(VIEWS), args.all_views_entities, repeats, url)
    return cases


if __name__ == "__main__":
    main()
