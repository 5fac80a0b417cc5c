"""The stream worker: event bus -> windowed aggregates -> Feast push, online and offline.

Run as ``adstack stream`` (or ``python -m pipelines.stream_features``). One loop:

1. **Read** a micro-batch from the consumer group: up to ``batch_size`` entries, or what
   arrived within ``batch_wait`` (entries pending from a crashed run come first).
2. **Aggregate** (:mod:`pipelines.stream_aggregates`): fold the events into 1-minute
   and 1-hour tiles and compute the rows whose values changed.
3. **Push** each view's rows through its Feast push source, online then offline (what
   ``PushMode.ONLINE_AND_OFFLINE`` does, as two calls so each is timed and the
   event-to-online latency is taken when the values are online).
4. **Commit**, in one Redis transaction: the touched tiles, the watermark, late and
   invalid entries (copied to ``<stream>:late`` and ``<stream>:invalid`` with their
   reason), the lease renewal and the ``XACK`` of the batch.

Delivery: an entry is acknowledged only after its rows were pushed, and the tile state
is committed atomically with that acknowledgement. After a crash the state on Redis is
exactly that of the acknowledged entries; the next run loads it and first claims the
pending entries (``XAUTOCLAIM``), so every entry is counted once. Pushes of a batch that
was processed but not committed are repeated: online writes are idempotent and the
offline log then holds duplicate rows with the same values.

One worker per consumer group: a lease key (renewed in every commit, watched by it)
stops a second worker from committing; a new worker waits for a dead one's lease to
expire. Scale out by running one worker per view (``--views``), each with its own group.

Freshness: ``adstack_stream_lag_seconds`` (now minus the event time of the newest pushed
event) and ``adstack_stream_event_to_online_seconds`` (from the entry's arrival on the
stream, the time Redis encodes in its id, until its values are online) are exported for
Prometheus (``--metrics-port``) and summarised in the ``<stream>:status:<group>`` hash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis
from feast import FeatureStore
from feast.data_source import PushMode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from core import units
from core.event_bus import FIELDS, KINDS, STREAM_KEY, Decoded, decode, entry_millis
from core.settings import get_settings
from feature_repo import contract
from pipelines.stream_aggregates import STREAM_VIEWS, Step, StreamAggregator

STAGES = ("read", "aggregate", "push_online", "push_offline", "commit")


@dataclass(frozen=True)
class WorkerConfig:
    repo_path: Path
    stream: str = STREAM_KEY
    group: str = "stream-features"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    views: tuple[str, ...] = tuple(STREAM_VIEWS)
    batch_size: int = 10_000
    batch_wait: float = 0.2
    lateness: int = units.span_micros(contract.ALLOWED_LATENESS)
    lease_seconds: float = 10.0
    # Stop after this many seconds without a new entry (None: run until signalled).
    exit_when_idle: float | None = None

    def key(self, *parts: object) -> str:
        return ":".join([self.stream, "state", self.group, *map(str, parts)])

    @property
    def lease_key(self) -> str:
        return self.key("lease")

    @property
    def status_key(self) -> str:
        return f"{self.stream}:status:{self.group}"


class LeaseLost(RuntimeError):
    pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("adstack_stream_events", "Events counted", ["kind"], registry=r)
        self.late = Counter(
            "adstack_stream_late_events", "Events past the lateness bound", registry=r
        )
        self.invalid = Counter("adstack_stream_invalid_entries", "Malformed entries", registry=r)
        self.vanished = Counter(
            "adstack_stream_vanished_entries", "Pending entries trimmed from the stream", registry=r
        )
        self.rows = Counter("adstack_stream_rows_pushed", "Rows pushed", ["view"], registry=r)
        self.lag = Gauge(
            "adstack_stream_lag_seconds", "Now minus newest pushed event time", registry=r
        )
        self.watermark = Gauge(
            "adstack_stream_watermark_seconds", "Event-time watermark", registry=r
        )
        self.event_to_online = Histogram(
            "adstack_stream_event_to_online_seconds",
            "Entry arrival to values online",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.stage = Histogram(
            "adstack_stream_stage_seconds", "Time per micro-batch stage", ["stage"], registry=r
        )
        self.totals = {
            name: 0 for name in ("entries", "events", "late", "invalid", "vanished", "rows")
        }
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self.recent_latency: deque[float] = deque(maxlen=20_000)
        self.last_lag: float | None = None

    def summary(self) -> dict[str, object]:
        latency = np.array(self.recent_latency) if self.recent_latency else None
        return {
            **self.totals,
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "lag_seconds": self.last_lag,
            "event_to_online_p50": None if latency is None else float(np.percentile(latency, 50)),
            "event_to_online_p99": None if latency is None else float(np.percentile(latency, 99)),
            "updated_at": time.time(),
        }


class StreamWorker:
    def __init__(
        self,
        client: redis.Redis,
        store: FeatureStore,
        config: WorkerConfig,
        metrics: Metrics | None = None,
    ) -> None:
        unknown = sorted(set(config.views) - set(STREAM_VIEWS))
        if unknown:
            raise ValueError(f"unknown stream views {unknown}; known: {sorted(STREAM_VIEWS)}")
        self.client = client
        self.store = store
        self.config = config
        self.metrics = metrics or Metrics()
        self.views = [STREAM_VIEWS[name] for name in config.views]
        self.aggregator = StreamAggregator(self.views, config.lateness)
        self.stopping = False

    # ------------------------------------------------------------ lifecycle

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> dict[str, object]:
        self._ensure_group()
        self._acquire_lease()
        self._load_state()
        self._drain_pending()
        idle_since = time.monotonic()
        while not (self.stopping or should_stop()):
            entries = self._read(">")
            if entries:
                self._process(entries)
                idle_since = time.monotonic()
            else:
                self._renew_lease()
                idle = self.config.exit_when_idle
                if idle is not None and time.monotonic() - idle_since >= idle:
                    break
        if self._holds_lease():
            self.client.delete(self.config.lease_key)
        return self.metrics.summary()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _acquire_lease(self) -> None:
        deadline = time.monotonic() + 3 * self.config.lease_seconds
        while True:
            ok = self.client.set(
                self.config.lease_key, self.config.consumer, nx=True, px=self._lease_ms
            )
            if ok:
                return
            holder = self.client.get(self.config.lease_key)
            if time.monotonic() > deadline:
                raise LeaseLost(
                    f"group {self.config.group} is held by worker {holder!r}; stop it or wait "
                    f"for its lease ({self.config.lease_seconds} s) to expire"
                )
            time.sleep(min(0.2, self.config.lease_seconds / 10))

    @property
    def _lease_ms(self) -> int:
        return int(self.config.lease_seconds * 1000)

    def _holds_lease(self) -> bool:
        holder = cast(bytes | None, self.client.get(self.config.lease_key))
        return holder is not None and holder.decode() == self.config.consumer

    def _watch_lease(self, pipe) -> None:
        """WATCH the lease in ``pipe`` (so a takeover aborts EXEC) after checking it is ours."""
        pipe.watch(self.config.lease_key)
        if pipe.get(self.config.lease_key) != self.config.consumer.encode():
            raise LeaseLost(f"worker {self.config.consumer} lost the lease of {self.config.group}")

    def _renew_lease(self) -> None:
        with self.client.pipeline() as pipe:
            self._watch_lease(pipe)
            pipe.multi()
            pipe.set(self.config.lease_key, self.config.consumer, px=self._lease_ms)
            pipe.execute()

    def _drain_pending(self) -> None:
        """Claim and process every entry a previous run read but did not acknowledge."""
        while True:
            _, entries, *deleted = self.client.xautoclaim(
                self.config.stream,
                self.config.group,
                self.config.consumer,
                min_idle_time=0,
                start_id="0-0",
                count=self.config.batch_size,
            )
            gone = [entry_id for entry_id in (deleted[0] if deleted else []) if entry_id]
            entries = [(entry_id, fields) for entry_id, fields in entries if entry_id]
            if not entries and not gone:
                break
            self._process(list(entries) + [(entry_id, None) for entry_id in gone])
        for consumer in self.client.xinfo_consumers(self.config.stream, self.config.group):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if name != self.config.consumer and consumer["pending"] == 0:
                self.client.xgroup_delconsumer(self.config.stream, self.config.group, name)

    # ------------------------------------------------------------ one micro-batch

    def _read(self, start: str) -> list:
        began = time.perf_counter()
        entries: list = []
        deadline = time.monotonic() + self.config.batch_wait
        while len(entries) < self.config.batch_size:
            wait_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            reply = self.client.xreadgroup(
                self.config.group,
                self.config.consumer,
                {self.config.stream: start},
                count=self.config.batch_size - len(entries),
                block=max(wait_ms, 1),
            )
            if reply:
                entries += cast(list, reply)[0][1]
            if time.monotonic() >= deadline:
                break
        self._time("read", began)
        return entries

    def _process(self, entries: list) -> None:
        self._renew_lease()
        began = time.perf_counter()
        decoded = decode(entries)
        step = self.aggregator.apply(decoded.events)
        self._time("aggregate", began)
        self._push(step, decoded)
        # Counted before the commit, so the status hash it writes includes this batch.
        self._count(step, decoded, len(entries))
        self._commit(step, decoded)

    def _push(self, step: Step, decoded: Decoded) -> None:
        self._push_views(step, PushMode.ONLINE, "push_online")
        online_at = time.time()
        if len(decoded.events):
            arrived = entry_millis(decoded.ids) / 1000
            latency = online_at - arrived
            self.metrics.recent_latency.extend(latency.tolist())
            for value in latency[:: max(1, len(latency) // 200)]:
                self.metrics.event_to_online.observe(float(value))
            newest = int(decoded.events.ts.max()) / 1e6
            self.metrics.last_lag = online_at - newest
            self.metrics.lag.set(self.metrics.last_lag)
        self._push_views(step, PushMode.OFFLINE, "push_offline")

    def _push_views(self, step: Step, mode: PushMode, stage: str) -> None:
        began = time.perf_counter()
        for view in self.views:
            rows = step.rows.get(view.spec.name)
            if rows is not None and len(rows):
                self.store.push(view.push_source, rows, to=mode)
        self._time(stage, began)

    def _commit(self, step: Step, decoded: Decoded) -> None:
        """Tiles, watermark, reports and acknowledgement: all or nothing."""
        began = time.perf_counter()
        config = self.config
        with self.client.pipeline() as pipe:
            self._watch_lease(pipe)
            pipe.multi()
            for (view_name, tile), parts in step.cells.items():
                ring = self.aggregator.states[view_name].rings[tile]
                index = self.aggregator.states[view_name].index
                cells = np.unique(np.concatenate(parts), axis=0)
                values = ring.cell_values(cells)
                ids = index.entity_ids(cells[:, 0])
                for tile_number in np.unique(cells[:, 1]).tolist():
                    rows = cells[:, 1] == tile_number
                    mapping: dict[Any, bytes] = {
                        str(entity): value.astype(np.int64).tobytes()
                        for entity, value in zip(ids[rows].tolist(), values[rows], strict=True)
                    }
                    pipe.hset(config.key(view_name, tile, tile_number), mapping=mapping)
                    pipe.sadd(config.key(view_name, tile, "tiles"), tile_number)
            for (view_name, tile), evicted in step.evicted.items():
                for tile_number in evicted:
                    pipe.unlink(config.key(view_name, tile, tile_number))
                    pipe.srem(config.key(view_name, tile, "tiles"), tile_number)
            if step.watermark is not None:
                pipe.set(config.key("watermark"), step.watermark)
            for index in step.late.tolist():
                pipe.xadd(
                    f"{config.stream}:late",
                    {
                        **{name: str(getattr(decoded.events, name)[index]) for name in FIELDS},
                        "kind": KINDS[decoded.events.kind[index]],
                        "entry_id": decoded.ids[index],
                        "reason": f"more than {config.lateness / 1e6:.0f} s behind the watermark",
                    },
                    maxlen=1_000_000,
                    approximate=True,
                )
            for entry_id, fields, reason in decoded.invalid:
                pipe.xadd(
                    f"{config.stream}:invalid",
                    {**fields, "entry_id": entry_id, "reason": reason},
                    maxlen=1_000_000,
                    approximate=True,
                )
            acked = [*decoded.ids, *(i for i, _, _ in decoded.invalid), *decoded.vanished]
            if acked:
                pipe.xack(config.stream, config.group, *acked)
            pipe.set(config.lease_key, config.consumer, px=self._lease_ms)
            summary = self.metrics.summary()
            pipe.hset(config.status_key, mapping={"summary": json.dumps(summary)})
            try:
                pipe.execute()
            except redis.WatchError as error:
                raise LeaseLost(
                    f"worker {config.consumer} lost the lease of {config.group}"
                ) from error
        self._time("commit", began)

    def _count(self, step: Step, decoded: Decoded, entries: int) -> None:
        m = self.metrics
        m.totals["entries"] += entries
        counted = len(decoded.events) - len(step.late)
        m.totals["events"] += counted
        m.totals["late"] += len(step.late)
        m.totals["invalid"] += len(decoded.invalid)
        m.totals["vanished"] += len(decoded.vanished)
        m.late.inc(len(step.late))
        m.invalid.inc(len(decoded.invalid))
        m.vanished.inc(len(decoded.vanished))
        kinds = np.bincount(decoded.events.kind, minlength=len(KINDS))
        for code, kind in enumerate(KINDS):
            m.events.labels(kind).inc(int(kinds[code]))
        for name, rows in step.rows.items():
            m.rows.labels(name).inc(len(rows))
            m.totals["rows"] += len(rows)
        if self.aggregator.watermark is not None:
            m.watermark.set(self.aggregator.watermark / 1e6)

    def _time(self, stage: str, began: float) -> None:
        elapsed = time.perf_counter() - began
        self.metrics.stage_seconds[stage] += elapsed
        self.metrics.stage.labels(stage).observe(elapsed)

    # ------------------------------------------------------------ state

    def _load_state(self) -> None:
        config = self.config
        watermark = self.client.get(config.key("watermark"))
        self.aggregator.watermark = int(watermark) if watermark is not None else None
        for name, state in self.aggregator.states.items():
            for tile, ring in state.rings.items():
                tiles = sorted(
                    int(t) for t in self.client.smembers(config.key(name, tile, "tiles"))
                )
                for tile_number in tiles:
                    stored = cast(
                        dict[bytes, bytes],
                        self.client.hgetall(config.key(name, tile, tile_number)),
                    )
                    if not stored:
                        continue
                    ids = np.array([int(entity) for entity in stored], dtype=np.int64)
                    values = np.frombuffer(b"".join(stored.values()), dtype=np.int64).reshape(
                        len(ids), -1
                    )
                    slots = state.index.slots(ids)
                    ring.grow(len(state.index))
                    ring.claim(tile_number)
                    ring.data[slots, tile_number % ring.positions] = values
                    known = ring.slots_by_tile.get(tile_number)
                    ring.slots_by_tile[tile_number] = (
                        np.unique(slots) if known is None else np.union1d(known, slots)
                    )


def status(
    client: redis.Redis, stream: str = STREAM_KEY, group: str = "stream-features"
) -> dict | None:
    raw = client.hget(f"{stream}:status:{group}", "summary")
    return json.loads(raw) if raw else None


def default_group(views: tuple[str, ...]) -> str:
    return (
        "stream-features"
        if set(views) == set(STREAM_VIEWS)
        else "stream-features-" + "-".join(sorted(views))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adstack stream", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--views", nargs="+", default=list(STREAM_VIEWS), choices=sorted(STREAM_VIEWS)
    )
    parser.add_argument("--group")
    parser.add_argument("--consumer")
    parser.add_argument("--stream", default=STREAM_KEY)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--batch-wait", type=float, default=0.2, help="seconds")
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--exit-when-idle", type=float, help="stop after this many idle seconds")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    args = parser.parse_args(argv)

    settings = get_settings()
    views = tuple(args.views)
    config = WorkerConfig(
        repo_path=settings.feature_repo,
        stream=args.stream,
        group=args.group or default_group(views),
        views=views,
        batch_size=args.batch_size,
        batch_wait=args.batch_wait,
        lease_seconds=args.lease_seconds,
        exit_when_idle=args.exit_when_idle,
        **({"consumer": args.consumer} if args.consumer else {}),
    )
    client = redis.Redis.from_url(settings.effective_redis_url)
    store = FeatureStore(repo_path=str(config.repo_path))
    metrics = Metrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    worker = StreamWorker(client, store, config, metrics)

    def stop(signum, frame) -> None:  # finish the batch in hand, commit, exit
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    summary = worker.run()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
