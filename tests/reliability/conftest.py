"""The reliability suite's scorer: ``uvicorn serving.app:app`` as a process (as
``adstack serve`` runs it) on the shared serving stack (tests/stack.py), so faults hit a
real server over real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adstack import processes, redis_server
from tests.stack import REQUEST_AT, Stack


@dataclass
class Scorer:
    url: str
    child: processes.Child
    stack: Stack


def start_scorer(stack: Stack, log: Path, workers: int = 1, **settings: str) -> Scorer:
    """A scorer process on ``stack``; ``settings`` are extra ADSTACK_* variables."""
    port = redis_server.free_port()
    child = processes.start(
        "scorer",
        processes.scorer_command(port, workers),
        {**stack.env(), **settings},
        log,
        ready=processes.http_ok(f"http://127.0.0.1:{port}/readyz"),
    )
    return Scorer(f"http://127.0.0.1:{port}", child, stack)


@pytest.fixture(scope="module")
def scorer(serving_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scorer]:
    log = tmp_path_factory.mktemp("scorer") / "scorer.log"
    started = start_scorer(serving_stack, log)
    try:
        yield started
    finally:
        processes.stop(started.child)


def auction_body(stack: Stack, i: int, candidates: int = 50, slots: int = 3) -> dict:
    """A valid auction at the stack's request instant: a known user, known ads."""
    ads = stack.ads["ad_id"].to_numpy()
    picked = [int(ads[(i * 7 + k) % len(ads)]) for k in range(min(candidates, len(ads)))]
    return {
        "request_id": f"rel-{i}",
        "user_id": int(stack.users[i % len(stack.users)]),
        "context": {
            "timestamp": REQUEST_AT.isoformat(),
            "device": ("mobile", "desktop", "tablet")[i % 3],
            "placement": "feed",
            "country": "US",
        },
        "slots": slots,
        "candidates": [{"ad_id": a} for a in picked],
    }


def auction_bytes(stack: Stack, count: int, candidates: int = 50) -> list[bytes]:
    return [json.dumps(auction_body(stack, i, candidates)).encode() for i in range(count)]
