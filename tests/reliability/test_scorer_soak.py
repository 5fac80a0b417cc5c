"""Soak of a scorer process: minutes of open-loop load at 70% of the highest rate it
serves within the p99 bound, found by a sweep in the same run on the same machine.

What only time reveals: memory that grows with traffic (a cache without a bound, a
metric label per request, references kept by a background task), latency that drifts
as the heap or a cache grows, and errors that come with either. The run lasts
``ADSTACK_SOAK_SECONDS`` (60 by default; 300 gives the 5-minute soak) after a warm-up
and a sweep of about 40 s.

Pass (``bench.soak.problems``): p99 of the whole soak within 25 ms, every request
answered 200 (no connection failure, none over the 5 s timeout), at most 1% degraded,
and the scorer's RSS (one process: ``--workers 1``) less than 5% above its value at the
end of warm-up (the first 20% of the soak, at most 60 s). Why 25 ms and how the rate is
found: ``bench.soak``, which runs the same ``measure`` for half an hour on the 1M-user
``bench.serving`` set-up (``python -m bench.soak``).

Latency counts from each request's scheduled send; p99 is judged less the time the
scorer or the load generator was runnable but waiting for a CPU, which is other work
on a shared machine (CI runs this suite alone; there the two differ by about 1 ms).
The printed summary has both figures and how much of the run each process waited.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adstack import processes
from bench import soak
from tests.reliability.conftest import auction_bytes, start_scorer
from tests.stack import Stack

# CI runs 60 s (make test must stay short); longer soaks: python -m bench.soak.
SOAK_SECONDS = float(os.environ.get("ADSTACK_SOAK_SECONDS", "60"))
# Fewer, longer sweep steps than the benchmark's: a rate held for 4 s can pass the bound
# while the queue it builds only shows over minutes (CI found 200 req/s within 25 ms in
# 4 s, then 140 req/s gave p99 47 ms over 90 s). The sweep stops at 150 req/s in CI.
SWEEP_RATES = (50, 100, 150)
SWEEP_STEP_SECONDS = 10.0


@pytest.mark.timeout(SOAK_SECONDS + 900)
def test_scorer_holds_latency_and_memory_over_a_soak(serving_stack: Stack, tmp_path: Path) -> None:
    scorer = start_scorer(serving_stack, tmp_path / "scorer.log")
    try:
        figures = soak.measure(
            f"{scorer.url}/v1/auction",
            auction_bytes(serving_stack, 500, candidates=50),
            scorer.child.pid,
            SOAK_SECONDS,
            rates=SWEEP_RATES,
            min_seconds=SWEEP_STEP_SECONDS,
        )
    finally:
        processes.stop(scorer.child)
    summary = soak.summary(figures)
    print(summary)
    missed = soak.problems(figures)
    assert not missed, "; ".join(missed) + f". {summary}"
