"""Stream worker: sustained throughput, event-to-online freshness, offline append cost.

The stream worker (``pipelines/stream_features.py``) has to keep up with the event bus
at 20k events/s and make values servable within a second; its offline log must not get
slower as it grows. Three measurements on a real ``redis-server`` (free port, temporary
directory) and temporary copies of ``feature_repo/`` applied with ``feast apply``; the
first and third against a Feast baseline timed in the same run, the second against
its goal:

1. **Throughput.** N synthetic events (about 50k users, 2k ads, 200 campaigns; 96%
   impressions, 3.5% clicks, 0.5% conversions, cost on clicks and conversions) whose
   event times advance at 20k events/s are written to the stream with ``EventProducer``
   (timed: producer events/s), then one in-process ``StreamWorker`` drains them.
   Events/s = events / (wall time - the idle second the worker waits before it exits),
   with the time per stage (read, aggregate, push online, push offline, commit).
   Baseline: the same events through a worker on a repo copy whose
   ``feature_store.yaml`` says Feast's stock ``provider: local`` (and whose push logs
   are single Parquet files, the only layout Feast's append can write; see
   :func:`make_project`). Repeated with a flushed Redis and a fresh data directory
   each time; medians reported.
2. **Freshness.** A producer thread sends live events (event time = now) at a constant
   rate in small chunks every 20 ms while the worker runs in the main thread
   (``batch_wait`` 0.1 s); p50 and p99 of the event-to-online latency (from the entry's
   arrival on the stream, the time Redis encodes in its id, until its values are
   online) over every event, and the lag (now minus the newest pushed event time)
   after each micro-batch. Goal: p99 under 1 s.
3. **Offline append.** The time of one ``FeatureStore.push(..., to=PushMode.OFFLINE)``
   of a 5k-row ``user_stream`` micro-batch when the push log already holds 10k and
   then 1M rows: ours (a new file per push in the partitioned log, history pre-filled
   as the files the worker would have written) versus Feast's stock DuckDB append into
   one Parquet file (a tiny repo with one ``FileSource`` on a single file, the same
   history). Ours must stay flat; Feast's reads and rewrites the whole file. Then, ours
   only, the same rows spread over more files (``--append-files``; 10-row files added):
   a log written by small micro-batches, or by a worker running for hours, holds many
   files, and each push costs something per file already there.

    python -m bench.stream [--events 200000] [--repeats 3] [--fresh-seconds 30]
    python -m bench.stream --quick    # ~2-3 min: 20k events, one repeat, 5 s live

``--quick`` (``--events 20000 --repeats 1 --fresh-seconds 5 --append-sizes 10000
100000 --appends 3 --append-files 500``, each overridable) checks that the benchmark
runs: it writes ``bench/results/quick/stream.json`` only. Results of a full run:
``bench/results/stream.json`` and three rows of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from adstack import redis_server
from bench.harness import ROOT, save_rows, use_quick
from core.event_bus import KINDS, EventProducer, Events
from core.feast_provider import append_partitioned
from core.settings import get_settings
from feature_repo import contract
from pipelines.stream_features import STAGES, StreamWorker, WorkerConfig

FEAST = str(Path(sys.executable).with_name("feast"))
OUR_PROVIDER = "provider: core.feast_provider.AdstackProvider"
STOCK_PROVIDER = "provider: local"
PROVIDERS = ("ours", "feast")
MICROS = 1_000_000
COMMAND = "python -m bench.stream"
THROUGHPUT_GOAL = 20_000  # events/s the worker must keep up with
FRESHNESS_GOAL_S = 1.0  # event-to-online p99
QUICK = {
    "events": 20_000,
    "repeats": 1,
    "fresh_seconds": 5.0,
    "append_sizes": [10_000, 100_000],
    "appends": 3,
    "append_files": [500],
}


# ------------------------------------------------------------------ projects


@dataclass(frozen=True)
class Project:
    """A ``feast apply``-ed copy of the feature repo with its own data directory."""

    repo: Path
    data: Path

    def store(self, redis_url: str):
        from feast import FeatureStore

        # The online store reads REDIS_URL through the (cached) settings.
        os.environ["REDIS_URL"] = redis_url
        os.environ["ADSTACK_DATA"] = str(self.data)
        get_settings.cache_clear()
        return FeatureStore(repo_path=str(self.repo))


def feast_apply(repo: Path, data: Path, redis_url: str) -> None:
    """``feast apply`` in a subprocess: Feast imports the repo's modules by name."""
    env = {
        **os.environ,
        "ADSTACK_DATA": str(data),
        "REDIS_URL": redis_url,
        "ADSTACK_OFFLINE_STORE": "duckdb",
    }
    result = subprocess.run(
        [FEAST, "-c", str(repo), "apply"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed in {repo}:\n{result.stdout}\n{result.stderr}")


def make_project(root: Path, redis_url: str, provider: str = "ours") -> Project:
    """Copy ``feature_repo/`` under ``root`` and apply it.

    ``provider="feast"`` is the baseline: ``provider: local`` in ``feature_store.yaml``,
    and push logs that are single Parquet files. Feast's stock DuckDB append cannot
    write to the repo's partitioned logs (it reads the schema with ``ParquetDataset``,
    which does not expand the ``<dir>/*/*.parquet`` glob, and would write the merged
    table back to that glob), so the copy's ``data_sources.py`` gets each push source
    redefined over ``<log dir>/log.parquet``, seeded with a zero-row file.
    """
    repo, data = root / "feature_repo", root / "data"
    repo.mkdir(parents=True)
    data.mkdir()
    for pattern in ("*.py", "*.yaml"):
        for file in (ROOT / "feature_repo").glob(pattern):
            shutil.copy(file, repo / file.name)
    if provider == "feast":
        yaml = repo / "feature_store.yaml"
        text = yaml.read_text()
        assert OUR_PROVIDER in text, "feature_store.yaml no longer names our provider"
        yaml.write_text(text.replace(OUR_PROVIDER, STOCK_PROVIDER))
        with open(repo / "data_sources.py", "a") as sources:
            sources.write(SINGLE_FILE_PUSH_LOGS)
        seed_single_file_logs(data)
    feast_apply(repo, data, redis_url)
    return Project(repo, data)


SINGLE_FILE_PUSH_LOGS = """

# Added by bench.stream for the stock-provider baseline: one Parquet file per push log.
PUSH = {
    name: PushSource(
        name=name,
        batch_source=FileSource(
            name=push_log_name(name),
            path=str(table_dir(DATA_ROOT, push_log_name(name)) / "log.parquet"),
            timestamp_field="event_timestamp",
        ),
        description=spec.description,
    )
    for name, spec in PUSH_SOURCES.items()
}
"""
PA_TYPES = {contract.INT64: pa.int64(), contract.FLOAT64: pa.float64()}


def view_schema(spec: contract.ViewSpec) -> pa.Schema:
    """A streamed view's push-log columns: join key, features, ``event_timestamp``."""
    return pa.schema(
        [
            *(pa.field(e.join_key, PA_TYPES[e.dtype]) for e in spec.entities),
            *(pa.field(f.name, PA_TYPES[f.dtype]) for f in spec.features),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )


def seed_single_file_logs(data: Path) -> None:
    for name, spec in contract.PUSH_SOURCES.items():
        path = contract.table_dir(data, contract.push_log_name(name)) / "log.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(view_schema(spec).empty_table(), path)


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Population:
    """Who the events are about: users and ads with skewed activity, ads in campaigns."""

    user_ids: np.ndarray
    user_weights: np.ndarray
    ad_ids: np.ndarray
    ad_weights: np.ndarray
    ad_campaign: np.ndarray
    ad_is_cpc: np.ndarray

    @classmethod
    def make(cls, users: int, ads: int, campaigns: int, seed: int = 11) -> Population:
        rng = np.random.default_rng(seed)
        user_weights = rng.lognormal(0.0, 1.2, users)
        ad_weights = rng.lognormal(0.0, 1.0, ads)
        campaign_ids = rng.choice(np.arange(1_000, 1_000_000), campaigns, replace=False)
        return cls(
            # Hashed user ids over the whole positive int64 range, small ad ids.
            user_ids=rng.choice(2**62, users, replace=False).astype(np.int64) + 1,
            user_weights=user_weights / user_weights.sum(),
            ad_ids=np.arange(1, ads + 1, dtype=np.int64) * 7 + 100_000,
            ad_weights=ad_weights / ad_weights.sum(),
            ad_campaign=campaign_ids[rng.integers(0, campaigns, ads)].astype(np.int64),
            ad_is_cpc=rng.random(ads) < 0.7,
        )


KIND_SHARES = (0.96, 0.035, 0.005)  # impression, click, conversion


def synthetic_events(
    population: Population,
    ts: np.ndarray,
    rng: np.random.Generator,
    first_impression_id: int = 1,
) -> Events:
    """Events at times ``ts``: impressions, and clicks and conversions on earlier
    impressions of the same batch (same user, ad and impression id).

    Cost: a click on a CPC ad bills about 0.40 (lognormal), a conversion on a CPA ad
    about 12; other events bill nothing.
    """
    n = len(ts)
    kind = rng.choice(3, n, p=KIND_SHARES).astype(np.int8)
    kind[0] = 0
    users = rng.choice(len(population.user_ids), n, p=population.user_weights)
    ads = rng.choice(len(population.ad_ids), n, p=population.ad_weights)
    impression_id = first_impression_id + np.cumsum(kind == 0) - 1
    # A click or conversion belongs to an impression up to ~2k events earlier.
    follow = np.flatnonzero(kind > 0)
    impression_rows = np.flatnonzero(kind == 0)
    latest = np.searchsorted(impression_rows, follow, side="right") - 1
    back = np.minimum(rng.integers(0, 2_000, len(follow)), latest)
    source = impression_rows[latest - back]
    users[follow], ads[follow] = users[source], ads[source]
    impression_id[follow] = impression_id[source]
    cpc = population.ad_is_cpc[ads]
    cost = np.zeros(n, dtype=np.int64)
    clicks = (kind == 1) & cpc
    conversions = (kind == 2) & ~cpc
    cost[clicks] = (rng.lognormal(np.log(0.4), 0.5, clicks.sum()) * MICROS).astype(np.int64)
    cost[conversions] = (rng.lognormal(np.log(12), 0.6, conversions.sum()) * MICROS).astype(
        np.int64
    )
    return Events(
        kind=kind,
        ts=np.asarray(ts, dtype=np.int64),
        user_id=population.user_ids[users],
        ad_id=population.ad_ids[ads],
        campaign_id=population.ad_campaign[ads],
        impression_id=impression_id.astype(np.int64),
        cost_micros=cost,
    )


def paced_times(n: int, rate: float, end_us: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` event times advancing at ``rate`` events/s and ending at ``end_us``, with up
    to 50 ms of disorder (events reach the bus slightly out of order)."""
    start = end_us - int(n / rate * MICROS)
    base = start + (np.arange(n) * (MICROS / rate)).astype(np.int64)
    return base - rng.integers(0, 50_000, n)


def now_us() -> int:
    return time.time_ns() // 1_000


# ------------------------------------------------------------------ worker runs


class RecordingWorker(StreamWorker):
    """A stream worker that notes, after each micro-batch, when it ended, the stage
    times so far (so the idle tail before exit can be left out), the lag, and every
    event's latency (the worker's own ``recent_latency`` keeps only the last 20k)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_batch_end: float | None = None
        self.stages_at_last_batch = dict.fromkeys(STAGES, 0.0)
        self.lags: list[float] = []
        self.latencies: list[float] = []

    def _process(self, entries: list) -> None:
        totals = self.metrics.totals
        decoded_before = totals["events"] + totals["late"]
        super()._process(entries)
        self.last_batch_end = time.perf_counter()
        self.stages_at_last_batch = dict(self.metrics.stage_seconds)
        if self.metrics.last_lag is not None:
            self.lags.append(self.metrics.last_lag)
        # One latency per decoded event was appended, the batch's last at the right.
        added = totals["events"] + totals["late"] - decoded_before
        newest = list(islice(reversed(self.metrics.recent_latency), added))
        self.latencies.extend(reversed(newest))


def produce(client: redis.Redis, events: Events) -> float:
    """Write ``events`` to the stream; returns the seconds it took."""
    began = time.perf_counter()
    EventProducer(client).send(events)
    return time.perf_counter() - began


def drain(store, client: redis.Redis, idle: float, batch_wait: float) -> dict:
    """Run a worker until the stream has been idle ``idle`` seconds; its figures."""
    config = WorkerConfig(
        repo_path=Path(store.repo_path),
        exit_when_idle=idle,
        lease_seconds=30,
        batch_wait=batch_wait,
    )
    worker = RecordingWorker(client, store, config)
    began = time.perf_counter()
    summary = worker.run()
    wall = time.perf_counter() - began
    active = (worker.last_batch_end or began) - began
    events = int(summary["events"])
    stages = worker.stages_at_last_batch
    return {
        "events": events,
        "rows_pushed": int(summary["rows"]),
        "late": int(summary["late"]),
        "wall_seconds": wall,
        "seconds": wall - idle,
        "events_per_s": events / (wall - idle),
        "seconds_to_last_commit": active,
        "events_per_s_to_last_commit": events / active if active else None,
        "stage_seconds": stages,
        "stage_percent": {k: 100 * v / (wall - idle) for k, v in stages.items()},
        "other_seconds": (wall - idle) - sum(stages.values()),
        "stage_seconds_including_idle_tail": dict(summary["stage_seconds"]),
    }


def throughput_repeat(
    provider: str, events: Events, scratch: Path, client: redis.Redis, url: str, idle: float
) -> dict:
    """Flushed Redis, fresh project and data dir; produce, then drain with a worker."""
    client.flushdb()
    project = make_project(scratch, url, provider)
    produced = produce(client, events)
    figures = drain(project.store(url), client, idle, batch_wait=0.2)
    figures["producer_seconds"] = produced
    figures["producer_events_per_s"] = len(events) / produced
    figures["offline_log_files"] = sum(1 for _ in project.data.rglob("*.parquet"))
    return figures


def throughput(args: argparse.Namespace, client: redis.Redis, url: str, scratch: Path) -> dict:
    rng = np.random.default_rng(3)
    population = Population.make(args.users, args.ads, args.campaigns)
    events = synthetic_events(population, paced_times(args.events, args.rate, now_us(), rng), rng)
    runs: dict[str, list[dict]] = {provider: [] for provider in PROVIDERS}
    warm_up = events.take(np.arange(min(len(events), 20_000)))
    for provider in PROVIDERS:  # lazy imports and first connections, not timed
        throughput_repeat(provider, warm_up, scratch / f"warm-{provider}", client, url, args.idle)
    for repeat in range(args.repeats):
        for provider in PROVIDERS:
            figures = throughput_repeat(
                provider, events, scratch / f"tp-{provider}-{repeat}", client, url, args.idle
            )
            runs[provider].append(figures)
            print(
                f"throughput {provider} #{repeat + 1}: {figures['events_per_s']:,.0f} events/s "
                f"(producer {figures['producer_events_per_s']:,.0f}/s)",
                flush=True,
            )
    medians = {provider: throughput_medians(runs[provider]) for provider in PROVIDERS}
    return {
        "events": args.events,
        "event_time_rate": args.rate,
        "definitions": {
            "events_per_s": "events / (worker wall time - exit_when_idle)",
            "events_per_s_to_last_commit": "events / (run start to the last batch's commit)",
            "stage_seconds": "worker stage times up to the last batch (idle reads excluded)",
            "stage_percent": "stage seconds / (worker wall time - exit_when_idle)",
            "other_seconds": "start-up (group, lease, state, pending), lease renewals, "
            "counting, and the idle wait beyond exit_when_idle (up to batch_wait)",
        },
        "kinds": dict(zip(KINDS, np.bincount(events.kind, minlength=3).tolist(), strict=True)),
        "runs": runs,
        "medians": medians,
        "ratio_ours_over_feast": medians["ours"]["events_per_s"] / medians["feast"]["events_per_s"],
    }


def throughput_medians(runs: list[dict]) -> dict:
    pick = lambda key: median(r[key] for r in runs)  # noqa: E731
    return {
        "events_per_s": pick("events_per_s"),
        "producer_events_per_s": pick("producer_events_per_s"),
        "seconds": pick("seconds"),
        "stage_seconds": {s: median(r["stage_seconds"][s] for r in runs) for s in STAGES},
        "stage_percent": {s: median(r["stage_percent"][s] for r in runs) for s in STAGES},
    }


# ------------------------------------------------------------------ freshness


@dataclass
class LiveProducer:
    """Sends ``events`` at ``rate`` events/s in chunks every ``period`` seconds, each
    chunk stamped with the wall clock as it is sent (live events)."""

    client: redis.Redis
    events: Events
    rate: float
    period: float = 0.02
    sent: int = 0
    seconds: float = 0.0
    behind_max: float = 0.0
    finished_at: float | None = None

    def run(self) -> None:
        producer = EventProducer(self.client)
        chunk = max(1, round(self.rate * self.period))
        began = time.monotonic()
        for k, first in enumerate(range(0, len(self.events), chunk)):
            delay = began + k * self.period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.behind_max = max(self.behind_max, -delay)
            part = self.events.take(np.arange(first, min(first + chunk, len(self.events))))
            stamped = Events(**{**part.__dict__, "ts": np.full(len(part), now_us(), np.int64)})
            producer.send(stamped)
            self.sent += len(stamped)
        self.seconds = time.monotonic() - began
        self.finished_at = time.monotonic()


def freshness(args: argparse.Namespace, client: redis.Redis, url: str, scratch: Path) -> dict:
    """Live events at a constant rate while one worker keeps up; latency percentiles."""
    client.flushdb()
    project = make_project(scratch / "fresh", url)
    store = project.store(url)
    rng = np.random.default_rng(5)
    population = Population.make(args.users, args.ads, args.campaigns)
    total = int(args.fresh_rate * args.fresh_seconds)
    events = synthetic_events(population, np.zeros(total, np.int64), rng)
    config = WorkerConfig(repo_path=project.repo, batch_wait=0.1, lease_seconds=30)
    worker = RecordingWorker(client, store, config)
    producer = LiveProducer(redis.Redis.from_url(url), events, args.fresh_rate)
    thread = threading.Thread(target=producer.run, name="live-producer", daemon=True)

    def should_stop() -> bool:
        done = producer.finished_at
        return done is not None and time.monotonic() >= done + args.fresh_drain

    thread.start()
    summary = worker.run(should_stop)
    thread.join()
    latency = np.asarray(worker.latencies)
    lags = np.asarray(worker.lags)
    print(
        f"freshness at {args.fresh_rate:,.0f}/s: p50 {np.percentile(latency, 50) * 1e3:.0f} ms, "
        f"p99 {np.percentile(latency, 99) * 1e3:.0f} ms",
        flush=True,
    )
    return {
        "rate": args.fresh_rate,
        "seconds": args.fresh_seconds,
        "chunk_period_seconds": producer.period,
        "batch_wait": config.batch_wait,
        "events_sent": producer.sent,
        "events_counted": int(summary["events"]),
        "producer_seconds": producer.seconds,
        "producer_rate_achieved": producer.sent / producer.seconds,
        "producer_max_behind_schedule_seconds": producer.behind_max,
        "micro_batches": len(lags),
        "event_to_online_seconds": percentiles(latency),
        "p99_over_goal_of_1s": float(np.percentile(latency, 99)) / FRESHNESS_GOAL_S,
        "event_to_online_seconds_after_first_5s": percentiles(latency[int(5 * args.fresh_rate) :]),
        "lag_seconds_per_batch": percentiles(lags),
        "lag_seconds_last": worker.metrics.last_lag,
        "stage_seconds": worker.stages_at_last_batch,
    }


def percentiles(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    pick = lambda q: float(np.percentile(values, q))  # noqa: E731
    return {"n": len(values), "p50": pick(50), "p90": pick(90), "p99": pick(99), "max": pick(100)}


# ------------------------------------------------------------------ offline append

PUSH_SOURCE = contract.push_source_name(contract.USER_STREAM.name)
APPEND_ROWS = 5_000
HISTORY_FILE_ROWS = 5_000  # history written as the worker writes it: one file per push

STOCK_YAML = """\
project: stock_append
provider: local
registry: {root}/registry.db
online_store:
  type: sqlite
  path: {root}/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""
STOCK_REPO = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource
from feast.types import Int64

user = Entity(name="user", join_keys=["user_id"])
log = FileSource(name="{log_name}", path="{path}", timestamp_field="event_timestamp")
push = PushSource(name="{push_name}", batch_source=log)
user_stream = FeatureView(
    name="{view_name}",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name=name, dtype=Int64) for name in {features!r}],
    source=push,
)
"""


def stock_append_repo(root: Path) -> tuple[Path, Path]:
    """A one-view Feast repo, ``provider: local``, push log = one Parquet file."""
    repo, log = root / "repo", root / "log" / "user_stream_push_log.parquet"
    repo.mkdir(parents=True)
    log.parent.mkdir()
    pq.write_table(view_schema(contract.USER_STREAM).empty_table(), log)
    (repo / "feature_store.yaml").write_text(STOCK_YAML.format(root=root))
    (repo / "repo.py").write_text(
        STOCK_REPO.format(
            log_name=contract.push_log_name(PUSH_SOURCE),
            path=log,
            push_name=PUSH_SOURCE,
            view_name=contract.USER_STREAM.name,
            features=contract.USER_STREAM.feature_names,
        )
    )
    result = subprocess.run([FEAST, "-c", str(repo), "apply"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed in {repo}:\n{result.stdout}\n{result.stderr}")
    return repo, log


def user_stream_rows(n: int, stamps_us: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """``n`` user_stream rows: int64 counts, microsecond UTC stamps."""
    columns: dict[str, object] = {"user_id": rng.integers(1, 2**62, n)}
    for name in contract.USER_STREAM.feature_names:
        columns[name] = rng.integers(0, 50, n)
    columns["event_timestamp"] = pa.array(stamps_us, pa.timestamp("us", tz="UTC"))
    return pa.table(columns, schema=view_schema(contract.USER_STREAM))


class AppendTarget:
    """One push log and the store that appends to it; ``top_up`` pre-fills history."""

    def __init__(self, name: str, store, log: Path, partitioned: bool) -> None:
        self.name, self.store, self.log, self.partitioned = name, store, log, partitioned
        self.rows = 0

    def top_up(self, history: pa.Table) -> None:
        if self.partitioned:
            for start in range(0, history.num_rows, HISTORY_FILE_ROWS):
                append_partitioned(
                    history.slice(start, HISTORY_FILE_ROWS), self.log, "event_timestamp"
                )
        else:
            previous = pq.read_table(self.log).cast(history.schema)
            pq.write_table(pa.concat_tables([previous, history]), self.log)
        self.rows += history.num_rows

    def files(self) -> int:
        return len(list(self.log.rglob("*.parquet"))) if self.partitioned else 1

    def append(self, frame: pd.DataFrame) -> float:
        from feast.data_source import PushMode

        began = time.perf_counter()
        self.store.push(PUSH_SOURCE, frame, to=PushMode.OFFLINE)
        seconds = time.perf_counter() - began
        self.rows += len(frame)
        return seconds


def micro_batch(rng: np.random.Generator) -> pd.DataFrame:
    stamps = np.full(APPEND_ROWS, now_us(), np.int64) - rng.integers(0, 500_000, APPEND_ROWS)
    return user_stream_rows(APPEND_ROWS, stamps, rng).to_pandas()


def offline_append(args: argparse.Namespace, client: redis.Redis, url: str, scratch: Path) -> dict:
    """Median time of one 5k-row offline push with the log holding each history size,
    then (ours only) with the same rows spread over more files."""
    client.flushdb()
    ours = make_project(scratch / "append-ours", url)
    repo, log = stock_append_repo(scratch / "append-feast")
    from feast import FeatureStore

    targets = [
        AppendTarget(
            "ours",
            ours.store(url),
            contract.table_dir(ours.data, contract.push_log_name(PUSH_SOURCE)),
            partitioned=True,
        ),
        AppendTarget("feast", FeatureStore(repo_path=str(repo)), log, partitioned=False),
    ]
    rng = np.random.default_rng(9)
    for target in targets:  # first push pays for lazy imports and connections
        target.append(micro_batch(rng))
    figures: dict = {
        "rows_per_append": APPEND_ROWS,
        "history_rows_per_file": HISTORY_FILE_ROWS,
        "appends": args.appends,
        "sizes": {},
    }
    for size in args.append_sizes:
        figures["sizes"][str(size)] = {
            target.name: time_appends(target, size, args.appends, rng) for target in targets
        }
    smallest, largest = (str(s) for s in (args.append_sizes[0], args.append_sizes[-1]))
    figures["growth"] = {
        t.name: figures["sizes"][largest][t.name]["ms_median"]
        / figures["sizes"][smallest][t.name]["ms_median"]
        for t in targets
    }
    figures["feast_over_ours_at_largest"] = (
        figures["sizes"][largest]["feast"]["ms_median"]
        / figures["sizes"][largest]["ours"]["ms_median"]
    )
    figures["ours_by_file_count"] = {
        str(files): time_appends(targets[0], targets[0].rows, args.appends, rng, files)
        for files in args.append_files
    }
    return figures


def time_appends(
    target: AppendTarget, rows: int, appends: int, rng: np.random.Generator, files: int = 0
) -> dict:
    """Top the log up to ``rows`` rows (and ``files`` files with 10-row files), then
    time ``appends`` pushes of a fresh micro-batch each."""
    missing = rows - target.rows
    if missing > 0:
        target.top_up(history(missing, rng))
    while target.partitioned and target.files() < files:
        for _ in range(files - target.files()):
            append_partitioned(history(10, rng, span=60), target.log, "event_timestamp")
            target.rows += 10
    held, held_files = target.rows, target.files()
    seconds = [target.append(micro_batch(rng)) for _ in range(appends)]
    print(
        f"offline append {target.name}, log of {held:,} rows in {held_files:,} files: "
        f"{1e3 * median(seconds):.1f} ms",
        flush=True,
    )
    return {
        "rows_before": held,
        "files_before": held_files,
        "seconds": seconds,
        "ms_median": 1e3 * median(seconds),
    }


def history(rows: int, rng: np.random.Generator, span: int = 2 * 86_400) -> pa.Table:
    """Older rows, stamped over ``span`` seconds before the last hour (by default two
    days: two or three date partitions)."""
    end = now_us() - 3_600 * MICROS
    return user_stream_rows(rows, np.sort(end - rng.integers(0, span * MICROS, rows)), rng)


# ------------------------------------------------------------------ report


def throughput_row(figures: dict) -> tuple[str, str, str]:
    ours, feast = figures["medians"]["ours"], figures["medians"]["feast"]
    stages = ", ".join(f"{s.replace('_', ' ')} {ours['stage_percent'][s]:.0f}%" for s in STAGES)
    feast_stages = ", ".join(
        f"{s.replace('_', ' ')} {feast['stage_percent'][s]:.0f}%" for s in STAGES
    )
    repeats = len(figures["runs"]["ours"])
    met = "met" if ours["events_per_s"] >= THROUGHPUT_GOAL else "missed"
    result = (
        f"{ours['events_per_s'] / 1e3:.1f}k events/s through the worker (median of {repeats}, "
        f"{figures['events'] // 1000}k events; goal {THROUGHPUT_GOAL // 1000}k/s: {met}); "
        f"time: {stages}; producer {ours['producer_events_per_s'] / 1e3:.0f}k events/s"
    )
    baseline = (
        f"Feast `provider: local`: {feast['events_per_s'] / 1e3:.1f}k events/s; "
        f"time: {feast_stages}"
    )
    ratio = f"{ours['events_per_s'] / feast['events_per_s']:.1f}x"
    return result, baseline, ratio


def freshness_row(figures: dict) -> tuple[str, str, str]:
    latency, lag = figures["event_to_online_seconds"], figures["lag_seconds_per_batch"]
    result = (
        f"event-to-online p50 {latency['p50'] * 1e3:.0f} ms, p99 {latency['p99'] * 1e3:.0f} ms "
        f"(max {latency['max'] * 1e3:.0f} ms) at {figures['rate'] / 1e3:.0f}k events/s for "
        f"{figures['seconds']:.0f} s ({latency['n']:,} events, "
        f"{figures['micro_batches']} micro-batches); lag p50 {lag['p50'] * 1e3:.0f} ms, "
        f"p99 {lag['p99'] * 1e3:.0f} ms"
    )
    met = "met" if latency["p99"] < FRESHNESS_GOAL_S else "missed"
    ratio = f"p99 / goal = {latency['p99'] / FRESHNESS_GOAL_S:.2f} ({met})"
    return result, f"goal: p99 < {FRESHNESS_GOAL_S:g} s", ratio


def append_row(figures: dict) -> tuple[str, str, str]:
    sizes = list(figures["sizes"])

    def describe(name: str) -> str:
        parts = []
        for size in sizes:
            case = figures["sizes"][size][name]
            files = f" in {case['files_before']:,} files" if name == "ours" else ""
            parts.append(f"{case['ms_median']:.1f} ms at {int(size) // 1000:,}k rows{files}")
        return ", ".join(parts) + f" ({figures['growth'][name]:.1f}x from smallest to largest)"

    by_files = figures.get("ours_by_file_count", {})
    spread = ", ".join(
        f"{case['ms_median']:.0f} ms in {case['files_before']:,} files"
        for case in by_files.values()
    )
    result = (
        f"ours (new file per push, partitioned log): {describe('ours')}"
        + (f"; the same rows in more files: {spread}" if spread else "")
        + f"; {figures['rows_per_append'] // 1000}k-row user_stream push, median of "
        f"{figures['appends']}"
    )
    baseline = f"Feast DuckDB append to one Parquet file: {describe('feast')}"
    largest = figures["sizes"][sizes[-1]]
    ratio = (
        f"at {int(sizes[-1]) // 1000:,}k rows: "
        f"{largest['feast']['ms_median'] / largest['ours']['ms_median']:.0f}x faster"
    )
    return result, baseline, ratio


ROWS = {
    "stream_throughput": ("throughput", throughput_row),
    "stream_freshness": ("freshness", freshness_row),
    "stream_offline_append": ("offline_append", append_row),
}


def head_commit() -> str:
    """The checked-out commit, read from ``.git`` (without running git)."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:7]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:7]
    except OSError:
        pass
    return "unknown"


def record(figures: dict, command: str) -> Path:
    """bench/results/stream.json and one BENCHMARKS.md row per measurement taken."""
    cells = {name: (r["result"], r["baseline"], r["ratio"]) for name, r in rows(figures).items()}
    return save_rows("stream", {"command": command, **figures}, cells, command=command)


# ------------------------------------------------------------------ main


def rows(figures: dict) -> dict[str, dict[str, str]]:
    """The BENCHMARKS.md rows of the measurements taken: name -> result, baseline, ratio."""
    out = {}
    for name, (key, row) in ROWS.items():
        if key in figures:
            result, baseline, ratio = row(figures[key])
            out[name] = {"result": result, "baseline": baseline, "ratio": ratio}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, quick results only")
    parser.add_argument("--parts", nargs="+", default=["throughput", "freshness", "append"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=20_000, help="event-time events/s")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--ads", type=int, default=2_000)
    parser.add_argument("--campaigns", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", type=float, default=1.0, help="worker exit_when_idle, s")
    parser.add_argument("--fresh-rate", type=float, default=5_000, help="events/s")
    parser.add_argument("--fresh-seconds", type=float, default=30.0)
    parser.add_argument("--fresh-drain", type=float, default=2.0, help="s after the producer")
    parser.add_argument("--append-sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--appends", type=int, default=5)
    parser.add_argument(
        "--append-files",
        type=int,
        nargs="*",
        default=[2_000, 10_000],
        help="ours only: time appends again with the log spread over this many files",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, url: str, scratch: Path) -> dict:
    client = redis.Redis.from_url(url)
    figures: dict = {"parameters": vars(args).copy(), "load_average_at_start": os.getloadavg()}
    if "throughput" in args.parts:
        figures["throughput"] = throughput(args, client, url, scratch)
    if "freshness" in args.parts:
        figures["freshness"] = freshness(args, client, url, scratch)
    if "append" in args.parts:
        figures["offline_append"] = offline_append(args, client, url, scratch)
    figures["load_average_at_end"] = os.getloadavg()
    client.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        use_quick()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        server_dir = Path(scratch) / "redis"
        server = redis_server.start(server_dir, redis_server.free_port(), persist=False)
        try:
            figures = run(args, server.url, Path(scratch))
        finally:
            redis_server.stop(server_dir)
    figures["total_seconds"] = time.perf_counter() - began
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    if not args.no_record:
        print(f"wrote {record(figures, command)}")
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
