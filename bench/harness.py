"""Benchmark bookkeeping: results as JSON under bench/results/, a row in BENCHMARKS.md.

The machine is shared and noisy, so every benchmark times a baseline in the same run
and reports medians over repeats plus the ratio to that baseline.

A ``--quick`` run (small data, few rates, short holds: a check that the benchmark still
runs, not a measurement) writes bench/results/quick/<name>.json only, never
bench/results/<name>.json or BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = RESULTS / "quick"
TABLE = ROOT / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Latest result of each benchmark; the JSON under `bench/results/` has every figure, "
    "the machine and the commit. Ratios compare against a baseline timed in the same run.\n\n"
    "| benchmark | result | baseline | ratio | command | date |\n"
    "|---|---|---|---|---|---|\n"
)


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def record(
    name: str, figures: dict, *, result: str, baseline: str, ratio: str, command: str
) -> Path:
    """Write bench/results/<name>.json and replace this benchmark's row in BENCHMARKS.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    payload = {"name": name, "date": date, "commit": commit(), "machine": machine(), **figures}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    row = f"| {name} | {result} | {baseline} | {ratio} | `{command}` | {date} |"
    lines = TABLE.read_text().splitlines() if TABLE.exists() else HEADER.splitlines()
    lines = [line for line in lines if not line.startswith(f"| {name} |")]
    lines.append(row)
    TABLE.write_text("\n".join(lines) + "\n")
    return path


def record_quick(name: str, figures: dict, **row: object) -> Path:
    """Write bench/results/quick/<name>.json, with the BENCHMARKS.md row it would have
    written under ``row``; BENCHMARKS.md and bench/results/<name>.json are left alone."""
    QUICK_RESULTS.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    payload = {"name": name, "date": date, "commit": commit(), "machine": machine()}
    path = QUICK_RESULTS / f"{name}.json"
    path.write_text(json.dumps({**payload, "quick": True, "row": row, **figures}, indent=2) + "\n")
    return path


def write_section(key: str, lines: list[str]) -> None:
    """Replace (or insert before the main table) the ``<!-- bench.<key> -->`` section of
    BENCHMARKS.md with ``lines``."""
    begin, end = f"<!-- bench.{key}:begin -->", f"<!-- bench.{key}:end -->"
    text = TABLE.read_text() if TABLE.exists() else HEADER
    if begin in text:
        before, rest = text.split(begin, 1)
        text = before + rest.split(end, 1)[1].lstrip("\n")
    rows = text.splitlines()
    at = next(i for i, line in enumerate(rows) if line.startswith("| benchmark |"))
    rows[at:at] = [begin, *lines, end, ""]
    TABLE.write_text("\n".join(rows) + "\n")
