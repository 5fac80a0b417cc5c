"""Prometheus metrics of the scorer, in one registry per app (not the global one), so
tests and reloads never collide. With several uvicorn workers each process exports its
own: scrape them per process, or front them with a Prometheus multiprocess collector."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Milliseconds-scale buckets: the latency goal is a p99 of 10 ms.
BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    1.0,
)
STAGES = ("parse", "redis", "assemble", "inference", "auction", "serialise")


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "adstack_stage_seconds",
            "Time per request stage.",
            ["endpoint", "stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "adstack_request_seconds",
            "Time per request, from the first byte read to the response built.",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "adstack_requests",
            "Requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "adstack_errors", "Failures by kind.", ["kind"], registry=self.registry
        )
        self.degraded = Counter(
            "adstack_degraded_responses",
            "Answers computed without online features (Redis down, slow or backing off).",
            ["endpoint"],
            registry=self.registry,
        )
        self.slots_requested = Counter(
            "adstack_slots_requested", "Slots asked for by auctions.", registry=self.registry
        )
        self.slots_filled = Counter(
            "adstack_slots_filled",
            "Slots filled by auctions (fill rate = filled / requested).",
            registry=self.registry,
        )
        self.fill_rate = Gauge(
            "adstack_fill_rate", "Fill rate since start.", registry=self.registry
        )
        self.missing_features = Counter(
            "adstack_missing_feature_values",
            "Feature values filled from the manifests.",
            registry=self.registry,
        )
        self.expired_rows = Counter(
            "adstack_expired_online_rows",
            "Online rows older than their view's TTL, read as missing.",
            ["view"],
            registry=self.registry,
        )
        self.explored = Counter(
            "adstack_explored_winners",
            "Winners chosen with an exploration draw.",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "adstack_model_version_info",
            "Serving model versions (value 1).",
            ["model", "version"],
            registry=self.registry,
        )
        self.served_logged = Counter(
            "adstack_served_logged",
            "Winners logged with their served features.",
            registry=self.registry,
        )

    def set_models(self, versions: dict[str, str]) -> None:
        self.model_version.clear()
        for model, version in versions.items():
            self.model_version.labels(model, version).set(1)

    def fill(self, requested: int, filled: int) -> None:
        self.slots_requested.inc(requested)
        self.slots_filled.inc(filled)
        total = self.slots_requested._value.get()
        self.fill_rate.set(self.slots_filled._value.get() / total if total else 0.0)


class Stopwatch:
    """Stage timings of one request, in milliseconds."""

    def __init__(self, started: float | None = None) -> None:
        self.last = started if started is not None else time.perf_counter()
        self.started = self.last
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = round((now - self.last) * 1000, 3)
        self.last = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.last = time.perf_counter()
        yield
        self.lap(name)

    def observe(self, telemetry: Telemetry, endpoint: str) -> None:
        for stage, ms in self.ms.items():
            telemetry.stage_seconds.labels(endpoint, stage).observe(ms / 1000)
