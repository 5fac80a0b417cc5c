"""Soak of the scorer: a long open-loop run at 70% of the highest rate it serves within
the p99 bound, watching latency over time and the process's memory.

1. Warm-up: 5 s at the sweep's lowest rate, so the ads' profiles are cached.
2. Sweep: increasing fixed rates (at least 300 requests or 4 s each) until p99 passes
   the bound; the highest rate within it (every request answered 200, at most 1%
   degraded) is the one found, measured in the same run on the same machine.
3. Soak: 70% of that rate for ``seconds``, in windows of a minute; the scorer's RSS
   (``VmRSS`` of its one process, ``--workers 1``) is read every 5 s.

Pass (``problems``): p99 over the whole soak within the bound; every request answered
200 (no connection failure, none over the 5 s timeout); at most 1% degraded; RSS at the
end less than 5% above RSS at the end of warm-up (the first 20% of the soak, at most
60 s: by then every cache that fills with traffic has filled).

The p99 bound is 25 ms. The product goal of 10 ms is known to be missed; on a quiet
machine p99 is about 16 ms at 50-100 req/s with 50 candidates (BENCHMARKS.md,
"serving"). 25 ms leaves room for a CI machine's variance, while a drift that only
time reveals (heap growth and longer collections, caches that slow down as they grow,
a queue that builds) takes p99 over it.

Latency counts from each request's scheduled send, so a server falling behind is
charged for its queue. The bound and the sweep judge it less the time the scorer or
the load generator was runnable but waiting for a CPU during the request
(``/proc/<pid>/schedstat``): other work on a shared machine stalls both for tens to
hundreds of milliseconds, which is the machine's latency, not the scorer's. On a quiet
machine (CI) that wait is near nothing and the two figures agree; both are reported.

Requests go out through ``bench.loadgen.open_loop``.

``tests/reliability/test_scorer_soak.py`` runs the same ``measure`` on the test stack
for ``ADSTACK_SOAK_SECONDS`` (60 by default). This entry point runs it on the
``bench.serving`` set-up (its ``--workdir``, prepared there if missing: 1M users, 100k
ads) and writes bench/results/soak.json and a BENCHMARKS.md section:

    python -m bench.soak [--seconds 1800] [--workdir /tmp/serving-bench]
    python -m bench.soak --quick    # ~2 min: 30 s soak on the small set-up

``--quick`` uses ``bench.serving --quick``'s set-up (20k users, 2k ads; prepared if
missing), a 2 s warm-up, 2 s sweep steps and a 30 s soak in 10 s windows; it checks
that the benchmark runs and writes bench/results/quick/soak.json only.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.harness import record, use_quick, write_section
from bench.loadgen import Answer, Result, clock, open_loop, request_bytes
from bench.serving import highest_rate

SWEEP_RATES = (25, 50, 75, 100, 125, 150, 200, 250)
SWEEP_MIN_REQUESTS, SWEEP_MIN_SECONDS = 300, 4.0
WARMUP_SECONDS = 5.0
P99_BOUND_MS = 25.0
SOAK_SHARE = 0.7
MAX_DEGRADED_SHARE = 0.01
MAX_RSS_GROWTH = 0.05
WINDOW_S = 60.0
RSS_EVERY_S = 5.0
CPU_WAIT_EVERY_S = 0.01


@dataclass(frozen=True)
class Timing:
    """How long each phase runs: warm-up, sweep steps (at least ``min_requests`` or
    ``min_seconds``), soak windows and RSS samples."""

    warmup_seconds: float = WARMUP_SECONDS
    min_seconds: float = SWEEP_MIN_SECONDS
    min_requests: int = SWEEP_MIN_REQUESTS
    window_s: float = WINDOW_S
    rss_every_s: float = RSS_EVERY_S


QUICK_TIMING = Timing(
    warmup_seconds=2.0, min_seconds=2.0, min_requests=0, window_s=10.0, rss_every_s=2.0
)
QUICK_SWEEP_RATES = (25, 50, 100, 150)


class RunQueueWait:
    """How long each process was runnable but waiting for a CPU (the second field of
    ``/proc/<pid>/schedstat``, its main thread's), sampled every ``every_s``. On a shared
    machine it is the part of a latency that other work caused; on a quiet one, nothing.
    ``pids`` gives each process's pid at sampling time (None while it has none: a server
    being restarted). Without schedstat in the kernel every wait reads 0."""

    def __init__(self, pids: list[Callable[[], int | None]], every_s: float) -> None:
        self.pids, self.every_s = pids, every_s
        self.instants: list[float] = []
        self.waits_ns: list[list[int]] = []

    async def sample(self) -> None:
        while True:
            instant = clock()
            waits = [schedstat_wait_ns(pid()) for pid in self.pids]
            self.instants.append(instant)  # both lists grow together or not at all
            self.waits_ns.append(waits)
            await asyncio.sleep(self.every_s)

    def waited_ms(self, start: float, end: float) -> float:
        """The longest wait of any of the processes from the last sample at or before
        ``start`` to the first at or after ``end`` (0 outside the sampled span; a process
        that restarted in between counts from 0)."""
        first = max(bisect.bisect_right(self.instants, start) - 1, 0)
        last = bisect.bisect_left(self.instants, end)
        if not self.instants or last >= len(self.instants):
            return 0.0
        before, after = self.waits_ns[first], self.waits_ns[last]
        return max(0, *(b - a for a, b in zip(before, after, strict=True))) / 1e6

    def share(self) -> list[float]:
        """Per process, the share of the sampled span spent waiting for a CPU."""
        if len(self.instants) < 2:
            return [0.0 for _ in self.pids]
        span_ns = (self.instants[-1] - self.instants[0]) * 1e9
        waited = [0] * len(self.pids)
        for before, after in zip(self.waits_ns, self.waits_ns[1:], strict=False):
            for i, (a, b) in enumerate(zip(before, after, strict=True)):
                waited[i] += max(0, b - a)  # a restarted process counts from 0 again
        return [round(ns / span_ns, 4) for ns in waited]


def schedstat_wait_ns(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Measured(Result):
    """``bench.loadgen``'s ``Result`` plus each latency less the CPU waits during it,
    and the share of the run the scorer and the load generator waited for a CPU."""

    charged_ms: list[float] = field(default_factory=list)
    cpu_wait: dict[str, float] = field(default_factory=dict)

    def absorb(self, other: Measured) -> None:
        self.sent += other.sent
        self.latencies_ms += other.latencies_ms
        self.charged_ms += other.charged_ms
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.failures += other.failures
        self.late += other.late
        self.degraded += other.degraded

    def summary(self) -> dict:
        charged = np.array(self.charged_ms) if self.charged_ms else np.array([np.nan])
        return {
            **super().summary(),
            "charged_p50_ms": round(float(np.percentile(charged, 50)), 3),
            "charged_p99_ms": round(float(np.percentile(charged, 99)), 3),
            "charged_max_ms": round(float(charged.max()), 3),
            "cpu_wait": self.cpu_wait,
        }


async def load(url: str, payloads: list[bytes], rate: float, seconds: float, pid: int) -> Measured:
    """``open_loop`` at ``rate`` for ``seconds`` against the scorer process ``pid``."""
    result = Measured(rate, seconds)
    timed: list[tuple[float, float]] = []

    def record(answer: Answer) -> None:
        if answer.status is None:
            result.late += answer.error == "late"
            result.failures += answer.error != "late"
            if answer.error != "late":
                return
        else:
            result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1
            result.degraded += answer.status == 200 and b'"degraded":true' in answer.body
        result.latencies_ms.append(answer.latency_ms)
        timed.append((answer.scheduled, answer.latency_ms))

    waits = RunQueueWait([lambda: pid, os.getpid], CPU_WAIT_EVERY_S)
    sampler = asyncio.create_task(waits.sample())
    try:
        result.sent, _ = await open_loop(url, payloads, rate, seconds, record)
    finally:
        sampler.cancel()
    result.charged_ms = [
        latency - waits.waited_ms(scheduled, scheduled + latency / 1000)
        for scheduled, latency in timed
    ]
    scorer_wait, client_wait = waits.share()
    result.cpu_wait = {"scorer": scorer_wait, "client": client_wait}
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def sweep(
    url: str,
    payloads: list[bytes],
    pid: int,
    bound_ms: float,
    log: Callable,
    rates: tuple[float, ...] = SWEEP_RATES,
    min_seconds: float = SWEEP_MIN_SECONDS,
    min_requests: int = SWEEP_MIN_REQUESTS,
) -> list[dict]:
    """Summaries at increasing rates, up to the first whose p99 (less CPU waits) passes
    ``bound_ms`` or that leaves a request without a 200."""
    points = []
    for rate in rates:
        seconds = max(min_seconds, min_requests / rate)
        point = (await load(url, payloads, rate, seconds, pid)).summary()
        points.append(point)
        log(
            f"sweep {rate} req/s: p50 {point['p50_ms']} p99 {point['p99_ms']} (less CPU waits "
            f"{point['charged_p99_ms']}) ms, {point['ok']}/{point['sent']} ok, "
            f"{point['degraded']} degraded, scorer waiting for a CPU "
            f"{point['cpu_wait']['scorer']:.1%}"
        )
        if point["charged_p99_ms"] > bound_ms or point["ok"] < point["sent"]:
            break
    return points


async def soak(
    url: str,
    payloads: list[bytes],
    pid: int,
    rate: float,
    seconds: float,
    window_s: float = WINDOW_S,
    rss_every_s: float = RSS_EVERY_S,
) -> dict:
    """``rate`` for ``seconds`` in windows of ``window_s``: per-window summaries, the
    whole run's summary, and RSS samples as ``[seconds from start, KiB]``."""
    whole = Measured(rate, seconds)
    windows, samples = [], []
    started = clock()

    async def sample_rss() -> None:
        while True:
            samples.append([round(clock() - started, 1), rss_kib(pid)])
            await asyncio.sleep(rss_every_s)

    rss_sampler = asyncio.create_task(sample_rss())
    try:
        done = 0.0
        while seconds - done > 1e-6:
            length = min(window_s, seconds - done)
            window = await load(url, payloads, rate, length, pid)
            windows.append({"start_s": round(done, 1), **window.summary()})
            whole.absorb(window)
            done += length
    finally:
        rss_sampler.cancel()
    samples.append([round(clock() - started, 1), rss_kib(pid)])
    whole.cpu_wait = {
        name: round(sum(w["cpu_wait"][name] * w["seconds"] for w in windows) / seconds, 4)
        for name in ("scorer", "client")
    }
    return {"windows": windows, "whole": whole.summary(), "rss_kib": samples}


def measure(
    url: str,
    payloads: list[bytes],
    pid: int,
    seconds: float,
    bound_ms: float = P99_BOUND_MS,
    log: Callable[[str], None] = print,
    rates: tuple[float, ...] = SWEEP_RATES,
    min_seconds: float = SWEEP_MIN_SECONDS,
    timing: Timing | None = None,
) -> dict:
    """Warm up, sweep for the highest rate within ``bound_ms``, soak at ``SOAK_SHARE``
    of it. ``url`` is the auction endpoint, ``payloads`` request bodies, ``pid`` the
    scorer's one process; ``timing`` the warm-up, sweep and soak lengths (default:
    the benchmark's). The figures, for ``problems``, ``summary`` and ``report``."""
    timing = timing or Timing(min_seconds=min_seconds)
    import uvloop

    requests = [request_bytes(url, body) for body in payloads]

    async def run() -> dict:
        await load(url, requests, rates[0], timing.warmup_seconds, pid)
        points = await sweep(
            url, requests, pid, bound_ms, log, rates, timing.min_seconds, timing.min_requests
        )
        judged = [{**p, "p99_ms": p["charged_p99_ms"]} for p in points]
        found = highest_rate(judged, bound_ms, MAX_DEGRADED_SHARE, failure_share=0.0)
        figures = {"bound_ms": bound_ms, "sweep": points, "highest_rate": found}
        if not found:
            return {**figures, "rate": 0.0}
        rate = round(SOAK_SHARE * found, 1)
        log(f"soak at {rate} req/s ({SOAK_SHARE:.0%} of {found:g}) for {seconds:g} s")
        soaked = await soak(url, requests, pid, rate, seconds, timing.window_s, timing.rss_every_s)
        return {**figures, "rate": rate, "seconds": seconds, **soaked}

    # The load generator shares a process with whatever the caller loaded (a test
    # session holds the whole stack): keep that heap out of the collector's passes,
    # which would otherwise stall the client and be charged to the server.
    gc.collect()
    gc.freeze()
    try:
        figures = uvloop.run(run())
    finally:
        gc.unfreeze()
    if figures["rate"]:
        figures.update(rss_growth(figures["rss_kib"], warmup_s(seconds)))
    return figures


def warmup_s(seconds: float) -> float:
    return min(60.0, 0.2 * seconds)


def rss_growth(samples: list[list[float]], warmup: float) -> dict:
    """RSS at the first sample at or after ``warmup`` seconds and at the end."""
    warm = next(kib for at, kib in samples if at >= warmup)
    end = samples[-1][1]
    growth = round((end - warm) / warm, 4)
    return {"warmup_s": warmup, "rss_warm_kib": warm, "rss_end_kib": end, "rss_growth": growth}


def problems(figures: dict) -> list[str]:
    """The pass criteria the figures miss, each with its figures."""
    bound = figures["bound_ms"]
    if not figures["rate"]:
        rates = [(p["rate"], p["p99_ms"], p["charged_p99_ms"]) for p in figures["sweep"]]
        return [f"no rate within p99 {bound:g} ms; (rate, p99, less CPU waits): {rates}"]
    whole, found = figures["whole"], []
    if whole["charged_p99_ms"] > bound:
        found.append(
            f"p99 {whole['charged_p99_ms']:g} ms less CPU waits ({whole['p99_ms']:g} ms as "
            f"measured) over the {bound:g} ms bound"
        )
    if whole["ok"] < whole["sent"] or whole["failures"] or whole["late"]:
        found.append(
            f"errors: {whole['ok']}/{whole['sent']} answered 200, statuses "
            f"{whole['statuses']}, {whole['failures']} failures, {whole['late']} late"
        )
    if whole["degraded"] > MAX_DEGRADED_SHARE * whole["sent"]:
        found.append(f"{whole['degraded']}/{whole['sent']} degraded")
    if figures["rss_growth"] >= MAX_RSS_GROWTH:
        found.append(
            f"RSS grew {figures['rss_growth']:.1%} ({figures['rss_warm_kib']} KiB at "
            f"{figures['warmup_s']:g} s, {figures['rss_end_kib']} KiB at the end)"
        )
    return found


def summary(figures: dict) -> str:
    if not figures["rate"]:
        return f"soak: no rate found within p99 {figures['bound_ms']:g} ms"
    whole, wait = figures["whole"], figures["whole"]["cpu_wait"]
    return (
        f"soak {figures['seconds']:g} s at {figures['rate']:g} req/s ({SOAK_SHARE:.0%} of "
        f"{figures['highest_rate']:g} found within p99 {figures['bound_ms']:g} ms): p50 "
        f"{whole['p50_ms']:g} p99 {whole['p99_ms']:g} max {whole['max_ms']:g} ms (less CPU "
        f"waits: p99 {whole['charged_p99_ms']:g} max {whole['charged_max_ms']:g} ms), "
        f"{whole['ok']}/{whole['sent']} ok, {whole['failures']} failures, {whole['late']} "
        f"late, {whole['degraded']} degraded; RSS {figures['rss_warm_kib'] / 1024:.1f} MiB at "
        f"{figures['warmup_s']:g} s -> {figures['rss_end_kib'] / 1024:.1f} MiB at the end "
        f"({figures['rss_growth']:+.2%}); waiting for a CPU: scorer {wait['scorer']:.1%}, "
        f"load generator {wait['client']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small set-up, 30 s soak")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/serving-bench"))
    parser.add_argument("--seconds", type=float, default=1800.0)
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(workdir=Path("/tmp/serving-bench-quick"), seconds=30.0)
    args = parser.parse_args()
    if args.quick:
        use_quick()
    from adstack import processes, redis_server
    from bench import serving
    from core.settings import get_settings

    scale = serving.QUICK if args.quick else serving.FULL
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    redis_dir = work / "redis"
    running = redis_server.status(redis_dir)
    server = running or redis_server.start(redis_dir, redis_server.free_port(), persist=True)
    env = serving.environment(work, server.url)
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        serving.prepare(work, scale)
        port = redis_server.free_port()
        scorer = processes.start(
            "scorer", processes.scorer_command(port, workers=1), env, work / "soak-scorer.log",
            ready=processes.http_ok(f"http://127.0.0.1:{port}/readyz"),
        )  # fmt: skip
        try:
            figures = measure(
                f"http://127.0.0.1:{port}/v1/auction",
                serving.bodies(scale, 50, 500, seed=50),
                scorer.pid,
                args.seconds,
                log=serving.log,
                rates=QUICK_SWEEP_RATES if args.quick else SWEEP_RATES,
                timing=QUICK_TIMING if args.quick else None,
            )
        finally:
            processes.stop(scorer)
    finally:
        if running is None:
            redis_server.stop(redis_dir)
    serving.log(summary(figures))
    report(figures, ("python -m bench.soak " + " ".join(sys.argv[1:])).strip())


def report(figures: dict, command: str) -> None:
    """The section and the row; a --quick run's go to bench/results/quick/."""
    missed = problems(figures)
    if not figures["rate"]:
        row = {"result": f"missed: {missed[0]}", "baseline": "-", "ratio": "-"}
    else:
        first, last, whole = figures["windows"][0], figures["windows"][-1], figures["whole"]
        window = "minute" if first["seconds"] == 60 else f"{first['seconds']:g} s"
        row = {
            "result": f"{figures['seconds']:g} s at {figures['rate']:g} req/s: p99 "
            f"{whole['p99_ms']:g} ms ({whole['charged_p99_ms']:g} less CPU waits; bound "
            f"{figures['bound_ms']:g} ms), {whole['ok']}/{whole['sent']} ok, RSS "
            f"{figures['rss_growth']:+.2%}; "
            + ("all criteria met" if not missed else "missed: " + "; ".join(missed)),
            "baseline": f"first {window} p99 {first['p99_ms']:g} ms; RSS "
            f"{figures['rss_warm_kib'] / 1024:.0f} MiB at {figures['warmup_s']:g} s",
            "ratio": f"last/first {window} p99 {last['p99_ms'] / first['p99_ms']:.2f}x",
        }
    write_section("soak", section(figures, command, missed))
    record("soak", figures, **row, command=command)


def section(figures: dict, command: str, missed: list[str]) -> list[str]:
    lines = [
        "## Scorer soak",
        "",
        f"`{command}`, {datetime.now(UTC):%Y-%m-%d}; one uvicorn worker on the `bench.serving` "
        "set-up (1M users, 100k ads), 50 candidates, 3 slots; load generator, Redis and "
        "server on the same 2 cores; latency from each request's scheduled send time, and "
        "less the time the scorer or the load generator waited for a CPU (other work on "
        "the machine).",
        "",
        f"Rate: {SOAK_SHARE:.0%} of the highest rate with p99 (less CPU waits) within "
        f"{figures['bound_ms']:g} ms, every request 200 and at most {MAX_DEGRADED_SHARE:.0%} "
        "degraded, in a sweep run just before (at least 300 requests or 4 s per rate):",
        "",
        "| sweep rate req/s | p50 ms | p99 ms | p99 less CPU waits ms | answered | degraded "
        "| scorer waiting for a CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in figures["sweep"]:
        lines.append(
            f"| {p['rate']:g} | {p['p50_ms']:g} | {p['p99_ms']:g} | {p['charged_p99_ms']:g} | "
            f"{p['ok']}/{p['sent']} | {p['degraded']} | {p['cpu_wait']['scorer']:.1%} |"
        )
    if not figures["rate"]:
        return [*lines, "", f"No soak: {missed[0]}."]
    rss = {at: kib for at, kib in figures["rss_kib"]}
    lines += [
        "",
        f"Soak at {figures['rate']:g} req/s (highest {figures['highest_rate']:g}) for "
        f"{figures['seconds']:g} s, per minute (RSS: the sample closest to the minute's end):",
        "",
        "| minute | p50 ms | p99 ms | p99 less CPU waits ms | max ms | answered | failures "
        "| late | degraded | scorer waiting for a CPU | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in figures["windows"]:
        end = w["start_s"] + w["seconds"]
        near = min(rss, key=lambda at: abs(at - end))
        lines.append(
            f"| {w['start_s'] / 60:g} | {w['p50_ms']:g} | {w['p99_ms']:g} | "
            f"{w['charged_p99_ms']:g} | {w['max_ms']:g} | {w['ok']}/{w['sent']} | "
            f"{w['failures']} | {w['late']} | {w['degraded']} | "
            f"{w['cpu_wait']['scorer']:.1%} | {rss[near] / 1024:.1f} |"
        )
    whole = figures["whole"]
    lines += [
        "",
        f"Whole soak: p50 {whole['p50_ms']:g} ms, p99 {whole['p99_ms']:g} ms "
        f"({whole['charged_p99_ms']:g} less CPU waits; bound {figures['bound_ms']:g}), max "
        f"{whole['max_ms']:g} ms; {whole['ok']}/{whole['sent']} answered 200, "
        f"{whole['failures']} connection failures, {whole['late']} late, {whole['degraded']} "
        f"degraded. RSS {figures['rss_warm_kib'] / 1024:.1f} MiB at the end of warm-up "
        f"({figures['warmup_s']:g} s), {figures['rss_end_kib'] / 1024:.1f} MiB at the end: "
        f"{figures['rss_growth']:+.2%} (limit {MAX_RSS_GROWTH:.0%}). "
        + ("All criteria met." if not missed else "Missed: " + "; ".join(missed) + "."),
    ]
    return lines


if __name__ == "__main__":
    main()
