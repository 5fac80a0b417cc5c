"""The stream worker killed five times while a replay is still feeding the stream.

Events are replayed onto the stream at a pace, the way live traffic arrives, while the
worker is started and SIGKILLed five times; its last run continues until the stream
has been idle after the end of the replay. Delivery promises that every entry counts
exactly once across those crashes: a killed worker's entries stay pending and are
claimed by the next run, whose state on Redis is that of the acknowledged entries. So
at the end nothing may be pending, the watermark must be the newest event, and every
stream view's online value must equal the recomputation from the raw events (a lost
entry would make a count lower, a double-counted one higher).

Each run is a process of its own running the command line's ``main`` (what ``adstack
stream`` and ``python -m pipelines.stream_features`` run) as its own consumer. Each kill
comes at a random point after the run has committed its first batch, so it hits a
worker that is reading, aggregating, pushing or committing, never one starting up; it
must find the worker holding entries it had read and not acknowledged, and the replay
still sending.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
import pytest
import redis
from feast import FeatureStore

from core.event_bus import STREAM_KEY, EventProducer
from core.units import MICROS_PER_SECOND
from pipelines import stream_features
from pipelines.replay import replay, stream_events
from pipelines.simulator import SimulationConfig
from pipelines.stream_aggregates import STREAM_VIEWS, recompute
from tests.integration.test_stream_worker import assert_same, make_project, online_frame, use_env

GROUP = "stream-features"
LEASE_KEY = f"{STREAM_KEY}:state:{GROUP}:lease"
KILLS = 5
# A restarted worker waits up to this long for the killed one's lease to expire.
LEASE_SECONDS = 2
# One day of traffic: about 105k events on the stream.
CONFIG = SimulationConfig(days=1, users=4_000, ads=300, impressions_per_day=100_000, seed=12)


@dataclass(frozen=True)
class Kill:
    consumer: str
    pending: int  # entries the killed worker had read and not acknowledged
    replay_running: bool
    sent: int  # events the replay had sent when the worker died


def run_worker(env: dict[str, str], argv: list[str], log: str) -> None:
    """The body of a worker process: ``adstack stream`` with ``argv``, output to ``log``."""
    os.environ.update(env)
    with open(log, "w") as out:
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
    sys.exit(stream_features.main(argv))


@pytest.fixture
def forkserver() -> BaseContext:
    """Worker processes forked from a server that has imported the worker's modules: a
    start then costs the worker's own start-up (settings, Redis, the Feast registry,
    the lease) instead of 3 to 10 s of imports, so five restarts fit in a short replay."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipelines.stream_features"])
    multiprocessing.forkserver.ensure_running()
    return context


class Worker:
    """One run of the stream worker, as consumer ``consumer``, logging to
    ``<logs>/<consumer>.log``."""

    def __init__(
        self, context: BaseContext, env: dict[str, str], consumer: str, logs: Path
    ) -> None:
        self.consumer = consumer
        self.log = logs / f"{consumer}.log"
        self.launched_at = time.time()
        argv = [
            "--consumer",
            consumer,
            "--batch-size",
            "2000",
            "--lease-seconds",
            str(LEASE_SECONDS),
            "--exit-when-idle",
            "2",
        ]
        self.process = context.Process(target=run_worker, args=(env, argv, str(self.log)))
        self.process.start()

    def wait_for(
        self,
        reached: Callable[[redis.Redis], bool],
        client: redis.Redis,
        what: str,
        timeout: float = 120.0,
    ) -> float:
        """Seconds until ``reached(client)``; fails if the worker exits first."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            assert self.process.is_alive(), f"worker {self.consumer} exited before {what}"
            if reached(client):
                return time.monotonic() - began
            time.sleep(0.05)
        raise AssertionError(f"worker {self.consumer} did not reach {what} within {timeout} s")

    def leads(self, client: redis.Redis) -> bool:
        """It holds the group's lease: its start-up is over."""
        return client.get(LEASE_KEY) == self.consumer.encode()

    def committed(self, client: redis.Redis) -> bool:
        """It has committed a batch: the status summary was written since its launch."""
        summary = stream_features.status(client, STREAM_KEY, GROUP)
        return summary is not None and summary["updated_at"] >= self.launched_at

    def pending(self, client: redis.Redis) -> int:
        for member in client.xinfo_consumers(STREAM_KEY, GROUP):
            if member["name"].decode() == self.consumer:
                return int(member["pending"])
        return 0


def test_killed_five_times_during_a_replay_the_worker_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, forkserver: BaseContext
) -> None:
    env = make_project(tmp_path, CONFIG, redis_url)
    use_env(monkeypatch, env)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    events = stream_events(tmp_path / "data")
    assert len(events) >= 100_000
    rng = np.random.default_rng(5)

    def start(consumer: str) -> Worker:
        workers.append(Worker(forkserver, env, consumer, tmp_path))
        return workers[-1]

    workers: list[Worker] = []
    try:
        first = start("killed-1")
        startup = first.wait_for(first.leads, client, "taking the lease")
        # Four more start-ups, each after a lease expiry, and five kills must fit in the
        # replay: pace it from the first start-up, with 50% to spare, and 3 s per kill
        # for a first batch and the random delay.
        replay_seconds = (KILLS - 1) * 1.5 * (startup + LEASE_SECONDS) + KILLS * 3.0
        speed = (events.ts[-1] - events.ts[0]) / MICROS_PER_SECOND / replay_seconds
        sent = [0]
        kills: list[Kill] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            replaying = pool.submit(
                replay,
                EventProducer(redis.Redis.from_url(redis_url)),
                events,
                speed,
                on_sent=lambda count, _ts: sent.__setitem__(0, count),
            )
            for number in range(1, KILLS + 1):
                worker = first if number == 1 else start(f"killed-{number}")
                worker.wait_for(worker.committed, client, "its first commit")
                time.sleep(float(rng.uniform(0.2, 2.0)))
                assert worker.process.is_alive(), f"worker {worker.consumer} exited too soon"
                worker.process.kill()
                worker.process.join()
                kills.append(
                    Kill(worker.consumer, worker.pending(client), not replaying.done(), sent[0])
                )
            # Restarted once more, the worker runs until idle after the replay's last event.
            final = start("final")
            report = replaying.result()
            final_running_at_replay_end = final.process.is_alive()
        final.process.join(timeout=600)
    finally:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
    assert final.process.exitcode == 0, final.log.read_text()[-3000:]
    assert report.events == len(events) and final_running_at_replay_end
    assert all(w.process.exitcode == -signal.SIGKILL for w in workers[:KILLS])
    assert all(kill.replay_running and 0 < kill.sent < len(events) for kill in kills), kills
    # A kill lands between an acknowledgement and the next read for a few milliseconds
    # per batch: allow one of the five to find nothing pending.
    assert sum(kill.pending > 0 for kill in kills) >= KILLS - 1, kills

    assert client.xpending(STREAM_KEY, GROUP)["pending"] == 0
    watermark = int(client.get(f"{STREAM_KEY}:state:{GROUP}:watermark"))
    assert watermark == int(events.ts.max()) + 1
    store = FeatureStore(repo_path=str(tmp_path / "feature_repo"))
    for name, view in STREAM_VIEWS.items():
        ids = np.unique(getattr(events, view.entity))
        expected = recompute(view, events, ids, np.full(len(ids), watermark))
        actual = online_frame(store, name, ids)
        assert_same(actual, expected, view.spec.feature_names)
