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

from bench import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Quick runs (``make bench-quick``) write here and never into BENCHMARKS.md.
QUICK = RESULTS / "quick"
TABLE = ROOT / "BENCHMARKS.md"
_quick = False


def use_quick() -> None:
    """Send this process's results to bench/results/quick/ and leave BENCHMARKS.md and
    the README alone (``--quick`` runs: a smoke check, not a measurement to quote)."""
    global _quick
    _quick = True


def results_dir() -> Path:
    return QUICK if _quick else RESULTS


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


def save_rows(name: str, figures: dict, rows: dict[str, tuple[str, ...]], *, command: str) -> Path:
    """Write bench/results/<name>.json with ``figures`` and the BENCHMARKS.md row text of
    each of its ``rows`` (row name -> result, baseline, ratio, and optionally the command,
    date and commit of an earlier run whose figures the row shows), then regenerate
    BENCHMARKS.md and the README's summary from every results file."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    payload = {"name": name, "date": date, "commit": commit(), "machine": machine(), **figures}
    payload["markdown_rows"] = {}
    for row, cells in rows.items():
        result, baseline, ratio, by, on = (*cells, command, date)[:5]
        payload["markdown_rows"][row] = {
            "result": result, "baseline": baseline, "ratio": ratio, "command": by, "date": on,
        }  # fmt: skip
        if len(cells) > 5:  # an earlier run's commit
            payload["markdown_rows"][row]["commit"] = cells[5]
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    _render()
    return path


def record(
    name: str, figures: dict, *, result: str, baseline: str, ratio: str, command: str
) -> Path:
    """One benchmark, one row: bench/results/<name>.json and its BENCHMARKS.md row."""
    return save_rows(name, figures, {name: (result, baseline, ratio)}, command=command)


def write_section(key: str, lines: list[str]) -> None:
    """The ``bench.<key>`` section of BENCHMARKS.md, kept as bench/results/<key>.section.md
    beside the benchmark's JSON and rendered from there."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{key}.section.md").write_text("\n".join(lines) + "\n")
    _render()


def _render() -> None:
    if not _quick:
        report.write(RESULTS, TABLE, ROOT / "README.md")
