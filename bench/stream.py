"""Stream worker: sustained throughput, event-to-online freshness, offline append cost.

The stream worker (``pipelines/stream_features.py``) has to keep up with the event bus
at 20k events/s and make values servable within a second; its offline log must not get
slower as it grows. Three measurements, each against a Feast baseline timed in the same
run, on a real ``redis-server`` (free port, temporary directory) and temporary copies of
``feature_repo/`` applied with ``feast apply``:

1. **Throughput.** N synthetic events (about 50k users, 2k ads, 200 campaigns; 96%
   impressions, 3.5% clicks, 0.5% conversions, cost on clicks and conversions) whose
   event times advance at 20k events/s are written to the stream with ``EventProducer``
   (timed: producer events/s), then one in-process ``StreamWorker`` drains them.
   Events/s = events / (wall time - the idle second the worker waits before it exits),
   with the time per stage (read, aggregate, push online, push offline, commit).
   Baseline: the same events through a worker on a repo copy whose
   ``feature_store.yaml`` says Feast's stock ``provider: local``. Repeated with a
   flushed Redis and a fresh data directory each time; medians reported.
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
   history). Ours must stay flat; Feast's reads and rewrites the whole file.

    python -m bench.stream [--events 200000] [--repeats 3] [--fresh-seconds 30]

Quick run: ``python -m bench.stream --events 20000 --repeats 1 --fresh-seconds 5
--append-sizes 10000 100000 --no-record``.
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
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from adstack import redis_server
from adstack.feast_provider import append_partitioned
from adstack.settings import get_settings
from bench.harness import RESULTS, ROOT, TABLE, commit, machine
from feature_repo import contract
from pipelines.event_bus import Events, EventProducer
from pipelines.stream_features import STAGES, StreamWorker, WorkerConfig

FEAST = str(Path(sys.executable).with_name("feast"))
OUR_PROVIDER = "provider: adstack.feast_provider.AdstackProvider"
STOCK_PROVIDER = "provider: local"
PROVIDERS = ("ours", "feast")
MICROS = 1_000_000
COMMAND = "python -m bench.stream"


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
    times so far and the lag, so the idle tail before exit can be left out."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_batch_end: float | None = None
        self.stages_at_last_batch = dict.fromkeys(STAGES, 0.0)
        self.lags: list[float] = []

    def _process(self, entries: list) -> None:
        super()._process(entries)
        self.last_batch_end = time.perf_counter()
        self.stages_at_last_batch = dict(self.metrics.stage_seconds)
        if self.metrics.last_lag is not None:
            self.lags.append(self.metrics.last_lag)


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
    return {
        "events": args.events,
        "event_time_rate": args.rate,
        "kinds": dict(zip(("impression", "click", "conversion"), map(int, np.bincount(events.kind, minlength=3)), strict=True)),
        "runs": runs,
        "medians": {provider: throughput_medians(runs[provider]) for provider in PROVIDERS},
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
