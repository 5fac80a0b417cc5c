"""An open-loop HTTP load generator: requests leave at a fixed rate whatever the server
does, and each latency is measured from the request's *scheduled* send time, so a
server that falls behind is charged for the queue it builds (no coordinated omission).

Lean on purpose, because it shares the machine's two cores with the server under test:
raw HTTP/1.1 on keep-alive connections over asyncio (uvloop), request bytes prepared in
advance, responses framed by Content-Length without parsing the body, except for a
sample whose JSON ``timings_ms`` gives the per-stage breakdown.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/auction --bodies bodies.jsonl \
        --rate 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

TIMEOUT_S = 5.0
IDLE_S = 2.0  # below uvicorn's 5 s keep-alive timeout
clock = time.perf_counter  # not loop.time(): uvloop's clock has millisecond resolution


@dataclass
class Result:
    rate: float
    seconds: float
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # connection errors
    late: int = 0  # not answered within the timeout
    stages: list[dict] = field(default_factory=list)
    degraded: int = 0  # answers marked degraded (every 200 is checked)
    max_connections: int = 0

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        ok = self.statuses.get(200, 0)
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "ok": ok,
            "achieved_rps": round(ok / self.seconds, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": self.failures,
            "late": self.late,
            "degraded": self.degraded,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p90_ms": round(float(np.percentile(lat, 90)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "p999_ms": round(float(np.percentile(lat, 99.9)), 3),
            "max_ms": round(float(lat.max()), 3),
            "connections": self.max_connections,
            "stages_ms": stage_summary(self.stages),
        }


def stage_summary(stages: list[dict]) -> dict:
    if not stages:
        return {}
    names = sorted({k for s in stages for k in s})
    return {
        name: {
            "p50": round(float(np.percentile([s.get(name, 0.0) for s in stages], 50)), 3),
            "p99": round(float(np.percentile([s.get(name, 0.0) for s in stages], 99)), 3),
            "mean": round(float(np.mean([s.get(name, 0.0) for s in stages])), 3),
        }
        for name in names
    }


def request_bytes(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parsed = urlparse(url)
    lines = [
        f"POST {parsed.path} HTTP/1.1",
        f"Host: {parsed.hostname}:{parsed.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


@dataclass
class Answer:
    scheduled: float  # clock() instant the request was due
    latency_ms: float  # from ``scheduled`` to the answer's last byte (or the failure)
    status: int | None  # None: connection failure or over the timeout
    body: bytes = b""
    error: str = ""  # "late" or the connection error's type


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response's status and body, framed by its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head[9:12]), await reader.readexactly(length)


class Connections:
    """Keep-alive connections to one server. A connection idle ``IDLE_S`` or closed by
    the server is not reused: uvicorn closes connections idle for 5 s, and a request
    written on one as it closes is lost to the client, which would count a connection
    failure the server did not make."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.released: dict[asyncio.StreamWriter, float] = {}
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and clock() - self.released.pop(writer) < IDLE_S:
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    def put(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.released[connection[1]] = clock()
        self.idle.append(connection)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def open_loop(
    url: str,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    record: Callable[[Answer], None],
    start: float | None = None,
    timeout_s: float = TIMEOUT_S,
) -> tuple[int, int]:
    """Send request ``i`` (``payloads`` cycled, complete HTTP requests) at ``start + i /
    rate`` whatever the server does; ``record`` gets every answer. Returns the number
    sent and the connections opened, once each request is answered or timed out."""
    parsed = urlparse(url)
    pool = Connections(parsed.hostname or "127.0.0.1", parsed.port or 80)
    start = clock() + 0.05 if start is None else start
    pending: set[asyncio.Task] = set()

    async def one(scheduled: float, payload: bytes) -> None:
        connection = None
        try:
            connection = await asyncio.wait_for(pool.get(), timeout_s)
            reader, writer = connection
            writer.write(payload)
            status, body = await asyncio.wait_for(read_response(reader), timeout_s)
            pool.put(connection)
            record(Answer(scheduled, (clock() - scheduled) * 1000, status, body))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            kind = "late" if isinstance(error, TimeoutError) else type(error).__name__
            record(Answer(scheduled, (clock() - scheduled) * 1000, None, error=kind))
            if connection:
                connection[1].close()

    total = int(rate * seconds)
    for index in range(total):
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - clock()))
        task = asyncio.create_task(one(scheduled, payloads[index % len(payloads)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout_s + 1)
    pool.close()
    return total, pool.opened


async def run(
    url: str,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    timeout_s: float = TIMEOUT_S,
    sample_every: int = 10,
) -> Result:
    """Send ``rate`` requests per second for ``seconds``, cycling through ``payloads``
    (complete HTTP requests). Returns when every request is answered or timed out."""
    result = Result(rate, seconds)
    answered = 0

    def record(answer: Answer) -> None:
        nonlocal answered
        if answer.status is None:
            if answer.error == "late":
                result.late += 1
                result.latencies_ms.append(answer.latency_ms)
            else:
                result.failures += 1
            return
        result.latencies_ms.append(answer.latency_ms)
        result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1
        if answer.status == 200:
            result.degraded += b'"degraded":true' in answer.body
            if answered % sample_every == 0:
                result.stages.append(json.loads(answer.body).get("timings_ms", {}))
            answered += 1

    result.sent, result.max_connections = await open_loop(
        url, payloads, rate, seconds, record, timeout_s=timeout_s
    )
    return result


def load(path: Path, url: str, headers: dict[str, str] | None = None) -> list[bytes]:
    return [request_bytes(url, line.encode()) for line in path.read_text().splitlines() if line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, help="write the summary JSON here")
    args = parser.parse_args()
    import uvloop

    payloads = load(args.bodies, args.url)
    result = uvloop.run(run(args.url, payloads, args.rate, args.seconds, args.timeout))
    summary = result.summary()
    text = json.dumps(summary)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
